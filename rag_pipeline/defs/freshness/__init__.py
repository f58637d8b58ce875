"""Freshness SLAs: Dagster freshness policies and the breach-recording sensor."""
