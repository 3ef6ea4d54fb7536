"""Runtime acceleration (--amp, --channels-last, --compile): resolution, training, storage, export.

The CPU tests force the options on (on the CPU `auto` leaves them off); the GPU tests are the
reliability plan's #13 (out-of-memory recovery) and #14 (no memory growth across 50 trials).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from automl_nn import accel, weights, workers
from automl_nn.accel import AccelConfig, Runtime
from automl_nn.data import catalog as data
from automl_nn.data.catalog import load
from automl_nn.errors import ConfigError
from automl_nn.nn import build
from automl_nn.results.export import load_exported
from automl_nn.spec import ArchSpec, Candidate, TrainSpec
from automl_nn.train import evaluate, fit, seed_everything
from automl_nn.trial import train_candidate
from benchmarks import bench_cuda
from tests.conftest import TINY, run

CPU = torch.device("cpu")
CONV = ArchSpec("conv2d", 2, (8, 8), "relu")
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _fit(arch: ArchSpec, runtime: Runtime, epochs: int = 2) -> tuple[torch.nn.Module, list[float]]:
    bundle = load("digits")
    seed_everything(0)
    model = build(arch, bundle.input_shape, bundle.n_outputs)
    spec = TrainSpec(optimizer="adam", lr=0.01, batch_size=64, epochs=epochs)
    history = fit(model, bundle, spec, runtime=runtime)
    return model, [e.val_loss for e in history.epochs]


# ---- resolution ----------------------------------------------------------------------------------


def test_auto_resolves_to_plain_fp32_on_cpu() -> None:
    for family in ("linear", "conv2d", "conv3d", "resnet"):
        assert accel.runtime_for(AccelConfig(), CPU, family) == accel.PLAIN


def test_forced_options_resolve_per_family() -> None:
    forced = AccelConfig(amp="fp16", channels_last="on", compile=True)
    assert accel.runtime_for(forced, CPU, "conv2d").memory_format is torch.channels_last
    assert accel.runtime_for(forced, CPU, "resnet").memory_format is torch.channels_last
    assert accel.runtime_for(forced, CPU, "conv3d_linear").memory_format is torch.channels_last_3d
    for family in ("linear", "conv1d"):  # no 4-d/5-d conv weights: nothing to lay out
        assert accel.runtime_for(forced, CPU, family).memory_format is None
    runtime = accel.runtime_for(forced, CPU, "linear")
    assert runtime.amp is torch.float16 and runtime.scaled and runtime.compile
    assert not accel.runtime_for(AccelConfig(amp="bf16"), CPU, "linear").scaled


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_on_cuda_is_bf16_where_native_and_channels_last_for_conv(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool,
) -> None:
    monkeypatch.setattr(accel, "_native_bf16", lambda _device: native_bf16)
    gpu = torch.device("cuda:0")  # resolution only: nothing is allocated on it
    runtime = accel.runtime_for(AccelConfig(), gpu, "conv2d_linear")
    assert runtime.amp is (torch.bfloat16 if native_bf16 else None)
    assert runtime.memory_format is torch.channels_last and not runtime.compile
    assert accel.runtime_for(AccelConfig(), gpu, "linear").memory_format is None
    if native_bf16:
        assert accel.amp_dtype("bf16", gpu) is torch.bfloat16
    else:
        with pytest.raises(ConfigError, match=r"no native bfloat16.*Use --amp fp16"):
            accel.amp_dtype("bf16", gpu)


# ---- training on the CPU with the options forced on ----------------------------------------------


def test_bf16_autocast_trains_and_evaluates_on_cpu() -> None:
    runtime = Runtime("cpu", amp=torch.bfloat16)
    model, losses = _fit(ArchSpec("linear", 1, (32,), "relu"), runtime, epochs=3)
    _, fp32_losses = _fit(ArchSpec("linear", 1, (32,), "relu"), accel.PLAIN, epochs=3)
    assert all(math.isfinite(loss) for loss in losses)
    assert losses != fp32_losses  # autocast really ran in bf16
    bundle = load("digits")
    test = evaluate(model, bundle, bundle.x_test, bundle.y_test, runtime=runtime)
    assert test.accuracy > 0.7  # chance is 0.1
    assert test.confidence.dtype == torch.float32  # metrics from the fp32 output
    assert math.isfinite(test.loss)


def test_fp16_with_loss_scaling_trains_on_cpu() -> None:
    _, losses = _fit(ArchSpec("linear", 1, (32,), "relu"), Runtime("cpu", amp=torch.float16))
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < math.log(10)  # below a uniform guess


def test_channels_last_gives_the_same_results_as_the_default_layout() -> None:
    last, last_losses = _fit(CONV, Runtime("cpu", memory_format=torch.channels_last))
    plain, plain_losses = _fit(CONV, accel.PLAIN)
    second_conv = cast(torch.Tensor, last.get_submodule("2").weight)  # 8 input channels: unambiguous
    assert second_conv.is_contiguous(memory_format=torch.channels_last)
    assert not second_conv.is_contiguous()
    assert last_losses == pytest.approx(plain_losses, rel=1e-3)
    for a, b in zip(last.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_compiled_state_dict_is_saved_as_the_plain_module() -> None:
    model = build(ArchSpec("linear", 1, (8,), "relu"), (64,), 3)
    compiled = cast(torch.nn.Module, torch.compile(model))  # nothing compiles until it is called
    assert all(k.startswith(accel.COMPILED_PREFIX) for k in compiled.state_dict())
    assert accel.plain(compiled) is model
    state = accel.plain_state(compiled.state_dict())
    assert list(state) == list(model.state_dict())
    build(ArchSpec("linear", 1, (8,), "relu"), (64,), 3).load_state_dict(state, strict=True)


@pytest.mark.slow  # torch.compile takes over a minute on a 2-core CPU (inductor + C++ compiler)
def test_compiled_trial_exports_and_reloads_with_identical_outputs(cli: CliRunner) -> None:
    code, output = run(cli, "search", "--dataset", "digits", "--family", "linear", "--depth", "1",
                       "--width", "16", "--epochs", "1", "--batch-size", "64", "--seed", "0",
                       "--trials", "1", "--compile", "--keep-weights", "all", "--study-name", "c")
    assert code == 0, output
    trial = optuna.load_study(study_name="c", storage="sqlite:///automl-nn.db").trials[0]
    assert trial.state == TrialState.COMPLETE
    code, output = run(cli, "export", "c", "--trial", "0", "--out", "exported")
    assert code == 0, output
    net, bundle = load_exported("exported"), load("digits")
    assert evaluate(net, bundle, bundle.x_val, bundle.y_val).accuracy == trial.user_attrs["accuracy"]


def test_channels_last_trial_exports_and_reloads(cli: CliRunner) -> None:
    code, output = run(cli, "search", "--dataset", "digits", "--family", "conv2d", "--depth", "2",
                       "--width", "8", "--epochs", "1", "--batch-size", "64", "--seed", "0",
                       "--trials", "1", "--channels-last", "on", "--keep-weights", "all",
                       "--study-name", "cl")
    assert code == 0, output
    trial = optuna.load_study(study_name="cl", storage="sqlite:///automl-nn.db").trials[0]
    code, output = run(cli, "export", "cl", "--trial", "0", "--out", "exported")
    assert code == 0, output
    state = weights.load_state(Path("exported/weights.pt"))
    assert all(v.is_contiguous() for v in state.values())  # stored in the default layout
    net, bundle = load_exported("exported"), load("digits")
    accuracy = evaluate(net, bundle, bundle.x_val, bundle.y_val).accuracy
    assert accuracy == pytest.approx(trial.user_attrs["accuracy"], abs=2 / len(bundle.y_val))


# ---- configuration, storage, bad input -----------------------------------------------------------


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--amp", "fp8", 'amp: unknown amp "fp8"'),
    ("--channels-last", "sideways", 'channels_last: unknown channels_last "sideways"'),
])
def test_bad_mode_exits_2_and_creates_no_storage(
    cli: CliRunner, tmp_path: Path, flag: str, value: str, message: str,
) -> None:
    code, output = run(cli, "search", *TINY, "--trials", "1", flag, value)
    assert code == 2
    assert message in output and "names: auto" in output
    assert not (tmp_path / "automl-nn.db").exists()
    assert not any(tmp_path.iterdir())


def test_study_file_keys_and_yaml_on_off(cli: CliRunner, tmp_path: Path) -> None:
    from automl_nn.config import load_file, resolve

    path = tmp_path / "s.yaml"
    path.write_text("dataset: digits\namp: off\nchannels_last: on\ncompile: false\n")
    config = resolve(load_file(path))  # YAML reads on/off as true/false
    assert config.accel() == AccelConfig(amp="off", channels_last="on", compile=False)
    path.write_text("dataset: digits\namp: on\n")
    code, output = run(cli, "check", str(path))
    assert code == 2 and "Write bf16 or fp16" in output


def test_options_are_stored_for_workers_and_follow_the_latest_search(cli: CliRunner) -> None:
    args = [*TINY, "--family", "conv2d", "--trials", "1", "--study-name", "s"]
    code, output = run(cli, "search", *args, "--amp", "off", "--channels-last", "on")
    assert code == 0, output
    joined = workers.config_from_storage("s", "sqlite:///automl-nn.db")
    assert joined.accel() == AccelConfig(amp="off", channels_last="on", compile=False)
    # the options are not the study's identity: resuming with others is allowed, and they stick
    code, output = run(cli, "search", *args[:-4], "--trials", "2", "--study-name", "s", "--amp", "bf16")
    assert code == 0, output
    stored = optuna.load_study(study_name="s", storage="sqlite:///automl-nn.db").user_attrs["config"]
    assert (stored["amp"], stored["channels_last"], stored["trials"]) == ("bf16", "auto", 2)
    assert workers.config_from_storage("s", "sqlite:///automl-nn.db").accel().amp == "bf16"


def test_data_goes_to_the_device_once_per_process(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves: list[str] = []
    real_to = data.DataBundle.to

    def counting_to(self: data.DataBundle, device: torch.device | str) -> data.DataBundle:
        moves.append(self.name)
        return real_to(self, device)

    monkeypatch.setattr(data.DataBundle, "to", counting_to)
    monkeypatch.setattr(data, "_ON_DEVICE", {})
    code, output = run(cli, "search", *TINY, "--trials", "3", "--study-name", "once")
    assert code == 0, output
    candidate = Candidate(ArchSpec("linear", 1, (8,), "relu"),
                          TrainSpec(optimizer="adam", lr=0.01, batch_size=64, epochs=1))
    for _ in range(2):  # `train` and every ablation variant go through train_candidate
        train_candidate(candidate, "digits")
    assert moves == ["digits"]


# ---- on a CUDA GPU: reliability plan #13 and #14 -------------------------------------------------


@NEEDS_CUDA
def test_oom_recovery() -> None:
    """#13: a trial too big for the GPU fails (oom), its memory is returned, the next trial runs."""
    result = bench_cuda.oom_recovery(torch.device("cuda:0"))
    assert result["states"] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert result["fail_reason"] == "oom"
    assert max(abs(d) for d in result["allocated_vs_baseline_bytes"]) <= 2**20


@pytest.mark.parametrize("device", [
    pytest.param("cuda:0", marks=NEEDS_CUDA),
    pytest.param("cpu", marks=pytest.mark.slow(reason="50 trials take 2-3 minutes on a 2-core CPU")),
])
def test_no_memory_growth_across_trials(device: str) -> None:
    """#14: 50 small trials in one process; GPU memory and RSS stay flat."""
    result = bench_cuda.memory_across_trials(torch.device(device), trials=50)
    assert result["complete"] == 50
    assert result["rss_slope_bytes_per_trial"] < bench_cuda.RSS_SLOPE_LIMIT
    if device.startswith("cuda"):
        assert abs(result["allocated_slope_bytes_per_trial"]) < 1024
        assert result["allocated_spread_bytes"] <= 2**20


# ---- benchmarks/bench_cuda.py: what runs without a GPU -------------------------------------------


def test_bench_cuda_refuses_to_run_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(SystemExit) as exit_info:
        bench_cuda.main([])
    assert exit_info.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_time_to_target_reads_the_first_epoch_that_reaches_it() -> None:
    epochs = [(1.0, 0.97), (1.5, 0.985), (1.2, 0.991), (1.1, 0.993)]
    assert bench_cuda.time_to_target(epochs, 0.99) == {"reached": True, "epochs": 3,
                                                        "seconds": pytest.approx(3.7), "best": 0.993}
    assert bench_cuda.time_to_target(epochs[:2], 0.99) == {"reached": False, "epochs": None,
                                                            "seconds": None, "best": 0.985}


def test_slope_of_a_series() -> None:
    assert bench_cuda.slope([5.0, 7.0, 9.0, 11.0]) == pytest.approx(2.0)
    assert bench_cuda.slope([3.0, 3.0, 3.0]) == pytest.approx(0.0)
    assert bench_cuda.slope([4.0]) == 0.0


def test_markdown_summary_lists_every_section() -> None:
    summary = {"device": "X", "trainer": [{"model": "cnn", "variant": "bf16+channels_last",
                                           "ours_samples_per_s": 1000.0,
                                           "reference_samples_per_s": 250.0, "ratio": 4.0,
                                           "gpu_util_ours": 91.0, "gpu_util_reference": 40.0}],
               "trials_per_device": [{"trials_per_device": 1, "trials_per_hour": 100.0,
                                      "wall_s": 10.0, "gpu_util": 30.0}],
               "oom": {"states": ["COMPLETE", "FAIL", "COMPLETE"], "fail_reason": "oom",
                       "allocated_vs_baseline_bytes": [0, 0]},
               "memory": {"complete": 50, "allocated_slope_bytes_per_trial": 0.0,
                          "allocated_spread_bytes": 0, "rss_slope_bytes_per_trial": 10.0},
               "mnist99": {"reached": True, "epochs": 3, "seconds": 4.2, "best": 0.991}}
    text = bench_cuda.markdown(summary)
    for needle in ("| cnn | bf16+channels_last | 1,000 | 250 | 4.00x | 91 | 40 |",
                   "| 1 | 100 |", "FAIL", "50 trials", "4.2 s"):
        assert needle in text, needle


def test_bench_config_is_valid_yaml_for_a_study_file(tmp_path: Path) -> None:
    from automl_nn.config import resolve

    raw = bench_cuda.search_config("mnist", trials=4, epochs=1, storage=f"journal:{tmp_path}/b.log")
    config = resolve(yaml.safe_load(yaml.safe_dump(raw)))  # as the script hands it to `search`
    assert (config.dataset, config.trials, config.max_epochs()) == ("mnist", 4, 1)
