"""benchmarks/anomaly.py (`make bench-anomaly`): its data sets, its grading and its report, without the
runs themselves. Its `--quick` path trains with `vae` in fresh processes (minutes on two cores), so it is
not part of the suite: `make bench-anomaly ARGS=--quick` runs it."""

from __future__ import annotations

import builtins
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vae_bench_anomaly", REPO / "benchmarks" / "anomaly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "digits"])
def test_a_minority_class_is_subsampled_to_five_percent_anomalies(bench, name: str) -> None:
    x, labels = bench.table(name, 0)
    assert len(x) == len(labels) and set(labels.tolist()) == {0, 1}
    assert labels.mean() == pytest.approx(0.05, abs=0.005)
    other_x, other_labels = bench.table(name, 1)  # another seed, other anomalies; the same normal rows
    assert (labels == 0).sum() == (other_labels == 0).sum()
    assert not np.array_equal(x[labels == 1], other_x[other_labels == 1])


def test_the_planted_outliers_are_shifted_in_every_feature(bench) -> None:
    x, labels = bench.table("planted", 0)
    assert x.shape == (400, 6) and labels.sum() == bench.PLANTED
    assert (x[labels == 1] > 6).all() and (np.abs(x[labels == 0]) < 6).all()


def test_scores_are_read_back_in_input_order_and_graded(bench, tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("rank,index,name,score\n1,2,2,9.5\n2,0,0,3.0\n3,1,1,-1.0\n")
    scores = bench.read_scores(path, 3)
    assert scores.tolist() == [3.0, -1.0, 9.5]
    assert bench.grade(scores, np.array([0, 0, 1])) == (1.0, 1.0)


def test_the_report_prints_one_table_per_half(bench, capsys: pytest.CaptureFixture) -> None:
    results = {
        name: {d: [(0.9, 0.5), (0.8, 0.4)] for d in bench.TABLE_DETECTORS} for name in ("planted", "wine")
    }
    results["_planted_first"] = dict.fromkeys(bench.TABLE_DETECTORS, 2)
    bench.print_tables(results, 2)
    bench.print_images({9: {"vae complexity": (0.8, 0.3), "IsolationForest": (0.6, 0.2)}})
    out = capsys.readouterr().out
    assert (
        "| planted | 400 | 5 | **0.850 ± 0.050 / 0.450** |" in out and "| mean ROC AUC | | | 0.850 |" in out
    )
    assert "planted: the 5 outliers ranked first in vae 2/2" in out
    assert "| 9 ankle-boot | 0.800 / 0.300 | 0.600 / 0.200 |" in out


def test_without_pyod_it_says_how_to_install_it(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pyod(name: str, *args, **kwargs):  # noqa: ANN002, ANN003
        if name == "pyod" or name.startswith("pyod."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pyod", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_pyod)
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[bench\]'"):
        bench.need_pyod()


def test_the_benchmark_runs_the_commands_the_docs_recommend(bench) -> None:
    docs = (REPO / "docs" / "own-data.md").read_text()
    assert " ".join(bench.IMAGE_TRAIN) in docs
    table = "vae train dataset=tensor dataset.path=table.csv dataset.label_column=label \\\n    "
    assert table + " ".join(bench.TABLE_TRAIN) in docs
    assert (
        "vae score ckpt=outputs/table input=table.csv label_column=label " + " ".join(bench.TABLE_SCORE)
        in docs
    )
