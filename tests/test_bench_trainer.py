"""The trainer benchmark's summary: both ratios over repeats, checked by hand."""

from __future__ import annotations

import pytest

from benchmarks.bench_trainer import markdown, ratios


def test_ratio_of_medians_and_median_of_ratios_are_both_reported() -> None:
    summary = ratios([10.0, 30.0, 20.0], [10.0, 10.0, 20.0])
    assert (summary["ours_samples_per_s"], summary["reference_samples_per_s"]) == (20.0, 10.0)
    assert summary["ratio_of_medians"] == pytest.approx(2.0)  # 20 / 10
    assert summary["median_of_ratios"] == pytest.approx(1.0)  # median of 1, 3, 1
    table = markdown({"data_path_only": {"reference_samples_per_s": 5.0}, "mlp": summary})
    assert table.splitlines()[-1] == "| mlp | 20 | 10 | 2.00x | 1.00x |"
