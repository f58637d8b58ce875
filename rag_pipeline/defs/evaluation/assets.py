"""The evaluation report of each candidate index version, and the retrieval quality gate."""

# No `from __future__ import annotations`: Dagster reads the run config class from the
# annotation of `config` at definition time.

import dagster as dg
import psycopg

from rag_pipeline.defs.catalog_metadata import LINEAGE_GROUP, row_count_metadata
from rag_pipeline.defs.indexes.assets import latest_candidate_version, vector_index
from rag_pipeline.defs.resources import EmbedderResource, EvaluationResource, PostgresResource
from rag_pipeline.lib.evaluation import kpi, quality, regression
from rag_pipeline.lib.evaluation.harness import AccessResolver
from rag_pipeline.lib.evaluation.judge import OpenAICompatibleJudge
from rag_pipeline.lib.evaluation.results_store import find_evaluation, save_evaluation
from rag_pipeline.lib.index_versions import active_version_id, record_check
from rag_pipeline.lib.retrieval.answer import generator_from_settings, policy_from_settings
from rag_pipeline.settings import current_settings

QUALITY_GATE = "retrieval_quality_not_regressed"


BUILD_RUNS_CONSIDERED = 50


def index_build_success_rate(instance: dg.DagsterInstance) -> tuple[float | None, int]:
    """Share of the last finished `build_index_job` runs that succeeded, and how many counted."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name="build_index_job",
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
        ),
        limit=BUILD_RUNS_CONSIDERED,
    )
    if not records:
        return None, 0
    succeeded = sum(1 for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS)
    return succeeded / len(records), len(records)


class EvaluationReportConfig(dg.Config):
    """Run config: the only way past a failed quality gate, and it is recorded."""

    allow_quality_regression: bool = False
    override_reason: str = ""


@dg.asset(
    deps=[vector_index],
    group_name=LINEAGE_GROUP,
    kinds={"postgres"},
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(
            QUALITY_GATE,
            asset="evaluation_report",
            blocking=True,
            description="The candidate retrieves no worse than the serving version on every "
            "golden set (within the tolerance), above the floors, with no permission incident",
        )
    ],
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationReportConfig,
    postgres: PostgresResource,
    embedder: EmbedderResource,
    evaluation: EvaluationResource,
) -> dg.MaterializeResult:
    """Every golden set asked of the candidate (default, vector-only and lexical-only
    configurations) and of the serving version, stored in `rag.evaluation_*`; the blocking
    `retrieval_quality_not_regressed` check compares them before `active_index` promotes.

    Results are keyed by version, golden-set content and options, so a re-run that changed
    nothing measures nothing again.
    """
    if config.allow_quality_regression and not config.override_reason.strip():
        raise dg.Failure(
            "allow_quality_regression needs an override_reason: the override is recorded",
            allow_retries=False,
        )
    settings = current_settings()
    version_id = latest_candidate_version(context)
    golden_sets = [quality.load_golden_set(path) for path in evaluation.golden_sets]
    access_for = AccessResolver(evaluation.directory_file)
    # Loading the model takes seconds: only when there is something to ask.
    model = embedder.embedder() if golden_sets else None
    configurations = quality.configurations(settings.retrieval_options())
    generator = generator_from_settings(settings)
    policy = policy_from_settings(settings)
    # Answer faithfulness and relevancy need a language model: only with a configured endpoint.
    judge = (
        OpenAICompatibleJudge(settings.llm_url, settings.llm_model, settings.llm_api_key)
        if settings.llm_url
        else None
    )

    def measured(
        conn: psycopg.Connection,
        version: int,
        golden_set: quality.GoldenSet,
        configuration: quality.Configuration,
    ) -> quality.SetEvaluation:
        assert model is not None
        found = find_evaluation(
            conn,
            version,
            golden_set.content_hash,
            configuration.name,
            quality.options_hash(
                configuration.options,
                model.model_key,
                judge.name if judge and configuration.answers else "",
            ),
        )
        if found is not None:
            return found
        context.log.info(
            f"evaluating version {version} on {golden_set.name} ({configuration.name}, "
            f"{len(golden_set.questions)} questions)"
        )
        result = quality.evaluate_set(
            conn,
            version,
            golden_set,
            configuration,
            access_for,
            model,
            model_key=model.model_key,
            generator=generator,
            policy=policy,
            judge=judge,
        )
        save_evaluation(conn, result, produced_by=f"dagster run {context.run_id}")
        return result

    with postgres.connection() as conn:
        serving_id = active_version_id(conn)
        candidate_results: list[quality.SetEvaluation] = []
        serving_results: dict[str, quality.SetEvaluation] = {}
        columns: list[tuple[str, dict[str, float | None]]] = []
        for golden_set in golden_sets:
            for configuration in configurations:
                result = measured(conn, version_id, golden_set, configuration)
                columns.append(
                    (f"v{version_id} {golden_set.name} {configuration.name}", result.metrics)
                )
                if configuration.name == quality.DEFAULT_CONFIGURATION:
                    candidate_results.append(result)
            if serving_id is not None and serving_id != version_id:
                serving = measured(conn, serving_id, golden_set, configurations[0])
                serving_results[golden_set.name] = serving
                columns.append((f"v{serving_id} {golden_set.name} serving", serving.metrics))
        floors = {
            "ndcg_at_10": evaluation.min_ndcg,
            "refusal_accuracy": evaluation.min_refusal_accuracy,
        }
        decision = regression.decide(
            candidate_results,
            serving_results,
            regression.QualityPolicy(tolerance=evaluation.tolerance, floors=floors),
            note=None if golden_sets else "no golden set configured (RAG_GOLDEN_SETS)",
        )
        detail = decision.detail()
        passed = decision.passed
        if not passed and config.allow_quality_regression:
            passed = True
            detail["override"] = {
                "run_id": context.run_id,
                "reason": config.override_reason.strip(),
            }
        with conn.transaction():
            record_check(conn, version_id, QUALITY_GATE, passed, True, detail)
        rows = row_count_metadata(conn, "evaluation_report")

    summary = (
        "; ".join(decision.failures)
        if decision.failures
        else (decision.note or f"no regression on {len(golden_sets)} golden set(s)")
    )
    if "override" in detail:
        summary = f"OVERRIDDEN by run config ({config.override_reason.strip()}): {summary}"
    build_rate, build_runs = index_build_success_rate(context.instance)
    markdown = [
        f"Candidate version **{version_id}**, "
        + (
            f"serving version **{serving_id}**."
            if serving_id is not None
            else "no serving version yet (nothing to compare with)."
        ),
        "",
        *kpi.kpi_table(columns),
        "",
        "Index build success rate: "
        + (
            f"{build_rate:.0%} of the last {build_runs} finished `build_index_job` runs"
            if build_rate is not None
            else "no finished `build_index_job` run yet"
        )
        + ". Cache hit rate: no query cache exists.",
        "",
        f"Gate: {'passed' if passed else 'FAILED'}: {summary}",
    ]
    for comparison in decision.comparisons:
        if comparison.serving is not None:
            wins, losses = comparison.wins, comparison.losses
            markdown.append(
                f"- {comparison.golden_set}: {len(wins)} questions better "
                f"({_listed(wins)}), {len(losses)} worse ({_listed(losses)}) "
                f"than version {comparison.serving.version_id}"
            )
    check = dg.AssetCheckResult(
        check_name=QUALITY_GATE,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=summary,
        metadata={
            "version_id": version_id,
            **({"serving_version_id": serving_id} if serving_id is not None else {}),
            "failures": dg.MetadataValue.json(decision.failures),
            "overridden": "override" in detail,
            "tolerance": evaluation.tolerance,
        },
    )
    flat = {
        f"{result.golden_set}.{metric}": value
        for result in candidate_results
        for metric, value in result.metrics.items()
        if value is not None
    }
    return dg.MaterializeResult(
        metadata={
            "version_id": version_id,
            **({"serving_version_id": serving_id} if serving_id is not None else {}),
            "golden_sets": dg.MetadataValue.json([s.name for s in golden_sets]),
            **rows,
            "report": dg.MetadataValue.md("\n".join(markdown)),
            **{key: float(value) for key, value in flat.items()},
            # Only once a build has finished: a placeholder would be plotted as a value.
            **({"index_build_success_rate": build_rate} if build_rate is not None else {}),
        },
        check_results=[check],
    )


QUESTIONS_LISTED = 10


def _listed(question_ids: list[str]) -> str:
    """The first question ids, and how many more there are."""
    shown = ", ".join(question_ids[:QUESTIONS_LISTED])
    more = len(question_ids) - QUESTIONS_LISTED
    return shown + (f" and {more} more" if more > 0 else "")
