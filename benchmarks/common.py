"""What several benchmark scripts share: the hypervolume of an (error, params) front, summaries.

Optuna 5.0 has no public function that returns a hypervolume (only the private
`optuna._hypervolume.compute_hypervolume` behind `plot_hypervolume_history`, which works on the raw
objective values, not on log10 params), so the exact 2-D sweep lives here.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence


def hypervolume(front: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Exact 2-D hypervolume of (error, params) points, on (error, log10 params), up to `reference`.

    `reference` is (error, log10 params). Dominated points and points outside the reference box add
    nothing. Sweeps by log-params: between two consecutive points the covered height is reference
    error minus the best error among the points to the left.
    """
    points = sorted((math.log10(p), e) for e, p in front)
    ordered = [(x, e) for x, e in points if x < reference[1] and e < reference[0]]
    area, best_error = 0.0, reference[0]
    for i, (x, error) in enumerate(ordered):
        best_error = min(best_error, error)
        right = ordered[i + 1][0] if i + 1 < len(ordered) else reference[1]
        area += (right - x) * (reference[0] - best_error)
    return area


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """`mean ± sample std` (std 0 for a single value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def machine() -> str:
    """One line naming the machine and the versions a figure was measured with."""
    import optuna
    import torch

    return (f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, load "
            f"{os.getloadavg()[0]:.2f}, Python {platform.python_version()}, torch "
            f"{torch.__version__}, optuna {optuna.__version__}")
