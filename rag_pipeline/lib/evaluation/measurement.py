"""What every benchmark and evaluation report measures the same way: latency percentiles and the
machine the figures came from.

One percentile definition for every report, so a p95 in `reports/bench.json` and one in
`reports/eval.json` mean the same thing: linear interpolation between the closest ranks (numpy's
default, `statistics.quantiles(..., method="inclusive")`).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np


def percentile(values: Sequence[float], share: float) -> float:
    """The `share` (0..1) percentile of `values`, interpolated linearly between closest ranks."""
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"percentile share {share} is outside 0..1")
    return float(np.percentile(np.asarray(values, dtype=np.float64), share * 100.0))


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: other work on the machine slows every timing."""
    return [round(value, 2) for value in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """The machine and libraries behind a report's timings, and how busy the machine was."""
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average_1_5_15": load_average(),
    }
