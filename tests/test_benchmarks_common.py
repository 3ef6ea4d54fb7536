import math

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume

from benchmarks.common import hypervolume


def test_hypervolume_of_one_point_is_its_box() -> None:
    # error 0.2 at 100 params against (error 1, 10^4 params): 0.8 x (4 - 2) on (error, log10 params)
    assert hypervolume([(0.2, 100.0)], (1.0, 4.0)) == pytest.approx(1.6)


def test_hypervolume_ignores_dominated_points_and_points_past_the_reference() -> None:
    front = [(0.2, 100.0), (0.1, 1000.0)]
    extra = [(0.3, 200.0), (0.05, 1e5), (1.2, 10.0)]
    assert hypervolume(front + extra, (1.0, 4.0)) == pytest.approx(hypervolume(front, (1.0, 4.0)))


def test_hypervolume_matches_optunas_exact_computation() -> None:
    # Optuna's own (private) WFG implementation as an independent reference, on (error, log10 params)
    rng = np.random.default_rng(0)
    for _ in range(20):
        errors, params = rng.uniform(0.0, 1.0, 12), 10 ** rng.uniform(1.0, 5.0, 12)
        reference = (1.0, 5.5)
        expected = compute_hypervolume(
            np.column_stack([errors, np.log10(params)]), np.array(reference))
        got = hypervolume(list(zip(errors.tolist(), params.tolist(), strict=True)), reference)
        assert math.isclose(got, expected, rel_tol=1e-9)
