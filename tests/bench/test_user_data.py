"""The user's own data: `--dataset table:PATH` (CSV/Parquet), `package.module:factory`, `awloss.bench.run`."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from awloss import bench
from awloss.bench.cli import main
from awloss.bench.datasets import BenchError

FAST = ["--epochs", "2", "--no-plots", "--no-progress", "--jobs", "1"]


def test_table_csv_three_seeds_ends_with_a_paired_recommendation(some_csv, tmp_path, capsys):
    """The issue's 'done when': a CSV the test writes, --targets a,b, --seeds 3, a Recommendation: line."""
    out = tmp_path / "out"
    rc = main(["bench", "--dataset", f"table:{some_csv}", "--targets", "a,b", "--seeds", "3", "--methods", "ew,uw",
               "--out", str(out), *FAST])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.strip().splitlines()
    assert lines[-1].startswith("Recommendation: "), lines[-1]
    assert "paired t-test over 3 seeds" in lines[-1]
    assert "a: regression (inferred" in cap.err and "b: classification (inferred: 3 integer levels)" in cap.err
    assert "city" in cap.err  # the text column left out of the features is named
    payload = json.loads((out / "results.json").read_text())
    v = payload["verdict"]
    assert v["text"] == lines[-1] and "paired t-test" in v["statistic"]
    uw = payload["comparisons_vs_ew"]["uw"]
    assert uw["seeds"] == [0, 1, 2] and len(uw["per_seed_delta_m"]) == 3
    assert set(uw["per_metric"]) == {"mae_a", "rmse_a", "acc_b", "f1_b"}
    assert 0 <= uw["delta_m"]["p"] <= 1 and uw["delta_m"]["ci"][0] <= uw["delta_m"]["mean"] <= uw["delta_m"]["ci"][1]
    assert payload["dataset_info"]["task_types"] == ["regression", "classification"]
    table = (out / "table.txt").read_text()
    assert "paired [95% CI]" in table and "p (Holm)" in table and table.strip().endswith(lines[-1])


def test_table_split_column_task_types_and_features(some_csv):
    ds = bench.table(some_csv, ["a", "b"], task_types="regression,classification", features="x1,x2", split="part")
    data = ds.load()
    assert data.train.x.shape[1] == 2 and len(data.train) == 96 and len(data.val) == 32 and len(data.test) == 32
    assert abs(float(data.train.x.mean())) < 1e-5  # standardised with the train statistics
    assert data.train.y[1].dtype == torch.int64 and int(data.train.y[1].max()) <= 2
    names = [m.name for m in ds.metrics()]
    assert names == ["mae_a", "rmse_a", "acc_b", "f1_b"]
    # the metrics are in the target's own units, the loss on the standardised target
    preds = [torch.full((len(data.test), 1), 0.0), torch.zeros(len(data.test), 3)]
    res = ds.evaluate(preds, data.test.y)
    assert res["mae_a"] > 100  # a is ~1000-scaled: predicting its train mean is far off in raw units
    assert float(ds.task_losses(preds, data.test.y)[0]) < 10  # ... but O(1) for the standardised loss


def test_table_given_classification_of_floats_and_fraction_split(tmp_path, make_csv):
    path = make_csv(tmp_path / "t.csv", n=100)
    ds = bench.table(path, "b,a", task_types="c,r", split="0.6,0.2,0.2")
    data = ds.load()
    assert (len(data.train), len(data.val), len(data.test)) == (60, 20, 20)
    assert ds.kinds == ["classification", "regression"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--targets", "a"], "at least 2 target columns"),
        (["--targets", "a,nosuch"], "target column 'nosuch' not in"),
        (["--targets", "a,b", "--features", "x1,city"], "feature 'city' is not numeric (row 1: "),
        (["--targets", "a,b", "--features", "x1,nope"], "feature column 'nope' not in"),
        (["--targets", "a,b", "--task-types", "regression"], "--task-types gives 1 types for 2 targets"),
        (["--targets", "a,b", "--task-types", "regression,ordinal"], "unknown type 'ordinal'"),
        (["--targets", "city,b", "--task-types", "regression,classification"], "is not numeric"),
        (["--targets", "a,b", "--split", "0.5,0.5"], "--split expects"),
        (["--targets", "a,b", "--split", "nosplitcol"], "split column 'nosplitcol' not in"),
        (["--targets", "a,a"], "names a column twice"),
        ([], "needs --targets"),
    ],
)
def test_table_bad_input_is_one_line(extra, expected, some_csv, capsys):
    assert main(["bench", "--dataset", f"table:{some_csv}", *extra, *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("awloss bench: error:") and expected in err[0], err


def test_table_missing_file_and_nan_target_count(tmp_path, make_csv, capsys):
    assert main(["bench", "--dataset", f"table:{tmp_path / 'nope.csv'}", "--targets", "a,b", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "file not found" in err[0] and "nope.csv" in err[0]
    path = make_csv(tmp_path / "nan.csv", n=50, nan_rows=7)
    assert main(["bench", "--dataset", f"table:{path}", "--targets", "a,b", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "target 'a' has no value (NaN or empty) in 7 of 50 rows" in err[0], err


def test_table_options_on_another_dataset_are_refused(capsys):
    assert main(["bench", "--dataset", "synthetic", "--targets", "a,b", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--targets only apply to --dataset table:PATH" in err[0]


def test_parquet_table(some_csv, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(some_csv)
    path = tmp_path / "some.parquet"
    try:
        frame.to_parquet(path)
    except ImportError:  # no pyarrow/fastparquet: the bench names the install
        path.write_bytes(b"PAR1")
        with pytest.raises(BenchError, match="pip install pandas pyarrow"):
            bench.table(path, ["a", "b"]).load()
        return
    data = bench.table(path, ["a", "b"]).load()
    assert len(data.train) + len(data.val) + len(data.test) == len(frame)


def test_table_cache_follows_the_file(some_csv, make_csv):
    before = bench.table(some_csv, ["a", "b"]).fingerprint()
    make_csv(some_csv, seed=1)
    assert bench.table(some_csv, ["a", "b"]).fingerprint() != before


PLUGIN = '''
import torch
from torch import nn
from awloss.bench import Data, DatasetSpec, Metric, Split
from awloss.bench.models import mlp_model


class Sines(DatasetSpec):
    name, tasks = "sines", ("sin", "cos")
    defaults = {"epochs": 2, "batch_size": 32, "lr": 1e-2}

    def load(self):
        n = int(self.config.get("n", 96))
        def split(k, seed):
            x = torch.rand(k, 1, generator=torch.Generator().manual_seed(seed)) * 6
            return Split(x, [torch.sin(x), torch.cos(x)])
        return Data(split(n, 0), split(48, 1), split(48, 2))

    def build_model(self):
        return mlp_model(1, (16,), (), [1, 1])

    def task_losses(self, preds, targets):
        return [nn.functional.mse_loss(p, y) for p, y in zip(preds, targets)]

    def metrics(self):
        return [Metric("mae_sin", "sin", False), Metric("mae_cos", "cos", False)]

    def evaluate(self, preds, targets):
        return {f"mae_{t}": float((p - y).abs().mean()) for t, p, y in zip(self.tasks, preds, targets)}


def make(n=96):
    return Sines({"n": n})


def wrong():
    return 42
'''


def test_plugin_factory(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_bench_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_bench_plugin", raising=False)
    out = tmp_path / "o"
    rc = main(["bench", "--dataset", "my_bench_plugin:make", "--data-args", "n=64", "--methods", "ew,uw",
               "--seeds", "2", "--no-stl", "--out", str(out), *FAST])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.strip().splitlines()[-1].startswith("Recommendation: ")
    payload = json.loads((out / "results.json").read_text())
    assert payload["config"]["dataset"] == "sines" and payload["dataset_info"] == {"n_train": 64, "n_val": 48,
                                                                                  "n_test": 48}  # fmt: skip
    for target, expected in [("my_bench_plugin:wrong", "returned int, not an awloss.bench.DatasetSpec"),
                             ("my_bench_plugin:nothere", "has no attribute 'nothere'"),
                             ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'")]:  # fmt: skip
        assert main(["bench", "--dataset", target, *FAST]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert main(["bench", "--dataset", "my_bench_plugin:make", "--data-args", "m=1", *FAST]) == 2
    assert "the factory rejects --data-args ['m']" in capsys.readouterr().err


def test_python_api_returns_results(some_csv):
    res = bench.run(bench.table(some_csv, ["a", "b"]), methods=["ew", "uw"], seeds=2, epochs=2, stl=False,
                    progress=False, jobs=1, plots=False)  # fmt: skip
    assert isinstance(res, bench.Results) and res.out is None
    assert str(res).splitlines()[-1] == res.recommendation and res.recommendation.startswith("Recommendation: ")
    assert {r["method"] for r in res.runs} == {"ew", "uw"} and len(res.runs) == 4
    assert res.verdict["method"] in ("ew", "uw")
    md = res.table("md")
    assert md.splitlines()[2].startswith("| method |") and md.strip().endswith(res.recommendation)
    assert "\\begin{tabular}" in res.table("latex") and "$\\Delta$m\\%" in res.table("latex")
    csv_text = res.table("csv")
    assert csv_text.splitlines()[0].startswith("method,") and len(csv_text.splitlines()) == 3


def test_readme_benchmark_cli_example_runs(tmp_path, monkeypatch, capsys):
    """The python example of README's "## Benchmark CLI" section runs as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Benchmark CLI\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)\n```", section, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__readme__"}
    exec(compile(blocks[0], "README.md[Benchmark CLI]", "exec"), ns)
    assert ns["res"].recommendation.startswith("Recommendation: ")
    assert capsys.readouterr().out.strip().splitlines()[-1] == ns["res"].recommendation
