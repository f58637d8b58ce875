"""Partitioning and retry policy shared by the per-source stages."""

import dagster as dg

# One partition per configured source; the source catalog sensor keeps it in line with the file.
SOURCE_PARTITIONS = dg.DynamicPartitionsDefinition(name="sources")

# Embedder and database hiccups are worth retrying; configuration errors are raised as
# `dg.Failure(allow_retries=False)` and are not.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL)
