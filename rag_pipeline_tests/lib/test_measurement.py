import statistics

import pytest

from rag_pipeline.lib.evaluation.measurement import load_average, machine_info, percentile


def test_percentile_is_the_inclusive_quantile_every_report_uses() -> None:
    values = [12.0, 3.5, 40.0, 7.25, 19.0, 5.0, 8.0]
    quantiles = statistics.quantiles(values, n=20, method="inclusive")
    assert percentile(values, 0.95) == pytest.approx(quantiles[18])
    assert percentile(values, 0.50) == pytest.approx(statistics.median(values))
    assert percentile(values, 0.0) == min(values) and percentile(values, 1.0) == max(values)
    assert percentile([42.0], 0.95) == 42.0


@pytest.mark.parametrize(("values", "share"), [([], 0.5), ([1.0, 2.0], 95), ([1.0], -0.1)])
def test_percentile_refuses_what_has_no_percentile(values: list[float], share: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, share)


def test_machine_info_says_how_busy_the_machine_was() -> None:
    info = machine_info()
    assert info["cpus"] and info["torch_threads"] >= 1 and info["python"].count(".") == 2
    assert len(info["load_average_1_5_15"]) == 3 == len(load_average())
    assert all(value >= 0 for value in info["load_average_1_5_15"])
