"""The workers benchmark's summary: the baseline is the best single-worker thread count."""

from __future__ import annotations

from benchmarks.bench_workers import Arm, best_baseline, report, space


def test_the_speed_up_is_taken_against_the_faster_single_worker_arm_and_printed_against_each() -> None:
    one, two, parallel = Arm(1, 1), Arm(1, 2), Arm(2)
    rates = {one: [2400.0, 2000.0, 2200.0], two: [1950.0, 2424.0, 1747.0], parallel: [3827.0, 3598.0, 3946.0]}
    walls = {one: [30.0, 33.0, 31.0], two: [35.9, 34.0, 37.0], parallel: [27.0, 26.0, 29.0]}

    assert best_baseline(rates) == one  # median 2200 against 1950

    lines = report(rates, walls, parallel)
    assert lines[0] == ("workers=1, 1 thread: trials/h per round 2400, 2000, 2200; median 2200 trials/h, "
                        "median wall 31.0 s")
    # 3827 / 2200 = 1.74, 31.0 / 27.0 = 1.15; against two threads 3827 / 1950 = 1.96, 35.9 / 27.0 = 1.33
    assert lines[3] == ("speed-up workers=2 / workers=1, 1 thread (best baseline): 1.74x trials/h "
                        "(steady state), 1.15x on wall time incl. start-up")
    assert lines[4] == ("speed-up workers=2 / workers=1, 2 threads: 1.96x trials/h (steady state), "
                        "1.33x on wall time incl. start-up")


def test_smoke_epochs_replace_the_space_s_own() -> None:
    args = space("mnist", 1)
    assert args[args.index("--epochs") + 1] == "1"
    assert space("mnist", None) == space("mnist", 2)
