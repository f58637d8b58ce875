import json

import dagster as dg

from rag_pipeline.defs.jobs import ingest_source_job
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS
from rag_pipeline.defs.resources import SourceCatalogResource
from rag_pipeline.lib.catalog import ConfigurationError
from rag_pipeline.lib.connectors import source_fingerprint


@dg.sensor(
    job=ingest_source_job,
    minimum_interval_seconds=60,
    description="Off by default (turn it on here to ingest on change). Every minute: keeps the "
    "`sources` partitions in line with the sources file and requests an ingestion run for each "
    "source whose listing changed. Without it, add partitions and ingest by hand or with "
    "`daily_reindex_schedule`.",
)
def source_catalog_sensor(
    context: dg.SensorEvaluationContext, catalog: SourceCatalogResource
) -> dg.SensorResult | dg.SkipReason:
    """Keep the `sources` partitions in line with the sources file and ingest changed sources.

    A source whose connector fingerprint changed since the last evaluation (a folder's listing
    of paths, sizes, modification times and modes; a repository's commit; an export's files)
    gets an ingestion run for its partition; sources removed from the file lose their partition
    (the next `vector_index` tombstones their documents). Reads no document contents, and no
    bad item or missing folder makes it fail: a source that vanished gets a run, which fails
    that one partition with the reason.
    """
    try:
        sources = catalog.sources()
    except ConfigurationError as error:
        return dg.SkipReason(f"sources file is invalid: {error}")
    seen = json.loads(context.cursor) if context.cursor else {}
    fingerprints = {source.name: source_fingerprint(source) for source in sources}
    existing = set(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS.name))
    added = sorted(set(fingerprints) - existing)
    removed = sorted(existing - set(fingerprints))
    changed = sorted(name for name, print_ in fingerprints.items() if seen.get(name) != print_)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=name, run_key=f"{name}:{fingerprints[name]}")
            for name in changed
        ],
        dynamic_partitions_requests=[
            request
            for request in (
                SOURCE_PARTITIONS.build_add_request(added) if added else None,
                SOURCE_PARTITIONS.build_delete_request(removed) if removed else None,
            )
            if request is not None
        ],
        cursor=json.dumps(fingerprints, sort_keys=True),
    )
