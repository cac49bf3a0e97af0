"""Sweep summaries: a real 3-job multirun with one failing job, cnnlab-summarize over separate runs,
and mean ± std over seeds on synthetic run dirs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from cnnlab.summarize import main as summarize_main

COLUMNS = ["status", "test/acc", "test/f1_macro", "val/acc_best", "epochs", "sec_per_epoch", "params", "error"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fake_run(run_dir: Path, overrides: list[str], **results) -> None:
    """A run dir as train() leaves it: .hydra/overrides.yaml and results.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / "results.json").write_text(json.dumps({"status": "completed", "num_params": 1000, **results}))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """optim.lr=-1 makes Adam raise: the job fails, the sweep goes on."""
    cwd = tmp_path_factory.mktemp("sweep")
    run_cli(["-m", "debug=fast", "optim.lr=0.01,0.001,-1", "hydra.sweep.dir=sweep"], cwd)
    return cwd / "sweep"


def test_sweep_summary_has_one_row_per_job_with_overrides_and_status(sweep_dir: Path) -> None:
    rows = read_rows(sweep_dir / "summary.csv")
    assert list(rows[0]) == ["run", "optim.lr", *COLUMNS]
    assert len(rows) == 3
    by_lr = {row["optim.lr"]: row for row in rows}
    assert set(by_lr) == {"0.01", "0.001", "-1"}
    for row in rows:  # each row describes its own job dir
        assert f"optim.lr={row['optim.lr']}" in (sweep_dir / row["run"] / ".hydra" / "overrides.yaml").read_text()
    assert by_lr["-1"]["status"] == "failed"
    failed_results = json.loads((sweep_dir / by_lr["-1"]["run"] / "results.json").read_text())
    assert by_lr["-1"]["error"] == failed_results["error"].splitlines()[0][:200] != ""
    assert rows[-1] is by_lr["-1"]  # failed jobs last
    completed = rows[:2]
    for row in completed:
        assert row["status"] == "completed" and not row["error"]
        assert 0 <= float(row["test/acc"]) <= 1 and int(row["params"]) > 0 and int(row["epochs"]) == 1
    assert float(completed[0]["val/acc_best"]) >= float(completed[1]["val/acc_best"])  # sorted by the optimized metric
    markdown = (sweep_dir / "summary.md").read_text()
    assert markdown.count("| completed |") == 2 and markdown.count("| failed |") == 1
    assert (sweep_dir / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_summarize_rebuilds_the_sweep_table_and_the_same_table_from_separate_runs(
    sweep_dir: Path, tmp_path: Path
) -> None:
    before = (sweep_dir / "summary.csv").read_text()
    run_cli([str(sweep_dir)], tmp_path, module="cnnlab.summarize")
    assert (sweep_dir / "summary.csv").read_text() == before
    # the same runs, kept as separate directories (as if made on different days)
    sweep_rows = read_rows(sweep_dir / "summary.csv")
    for row in sweep_rows:
        copy = tmp_path / f"day{row['run']}" / "run"
        shutil.copytree(sweep_dir / row["run"], copy, ignore=shutil.ignore_patterns("checkpoints"))
    summarize_main([str(tmp_path / f"day{row['run']}") for row in sweep_rows] + ["--out", str(tmp_path / "out")])
    rows = read_rows(tmp_path / "out" / "summary.csv")
    assert [row.pop("run") for row in rows] == [f"../day{row.pop('run')}/run" for row in sweep_rows]
    assert rows == sweep_rows


def test_seed_only_sweep_reports_mean_and_std(tmp_path: Path) -> None:
    for seed, acc in enumerate([0.80, 0.90, 0.85]):
        fake_run(tmp_path / str(seed), ["model=small", f"seed={seed}"], **{"val/acc_best": acc, "test/acc": acc})
    summarize_main([str(tmp_path)])
    rows = read_rows(tmp_path / "summary.csv")
    assert [row["seed"] for row in rows] == ["1", "2", "0"]  # best val/acc_best first
    markdown = (tmp_path / "summary.md").read_text()
    assert "Mean ± std over `seed`" in markdown
    assert "| 3 | 0.8500 ± 0.0500 |" in markdown  # runs, test/acc: sample std of 0.80, 0.90, 0.85


def test_two_swept_parameters_and_loss_metric_sort_ascending(tmp_path: Path) -> None:
    for i, (lr, bs) in enumerate([(0.1, 32), (0.1, 64), (0.01, 32), (0.01, 64)]):
        fake_run(tmp_path / str(i), [f"optim.lr={lr}", f"data.batch_size={bs}"], **{"val/loss_best": 1.0 + i / 10})
    summarize_main([str(tmp_path), "--metric", "val/loss_best"])
    rows = read_rows(tmp_path / "summary.csv")
    assert list(rows[0])[:3] == ["run", "optim.lr", "data.batch_size"]
    assert [row["val/loss_best"] for row in rows] == ["1.0", "1.1", "1.2", "1.3"]
    assert "Mean ± std" not in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "summary.png").exists()


def test_sweep_end_marks_a_killed_job_lost(tmp_path: Path) -> None:
    """At a multirun's end (any launcher) every job has ended: one whose results.json still says "running" was
    killed before it could say so (SIGKILL, out of memory) and is listed as lost; the others keep theirs."""
    from omegaconf import OmegaConf

    from cnnlab.evaluation.summary import SweepSummary

    fake_run(tmp_path / "0", ["seed=0"], **{"val/acc_best": 0.9})
    fake_run(tmp_path / "1", ["seed=1"], status="running")
    fake_run(tmp_path / "2", ["seed=2"], status="interrupted", error="interrupted by SIGTERM")
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    rows = {row["run"]: row for row in read_rows(tmp_path / "summary.csv")}
    assert {run: row["status"] for run, row in rows.items()} == {"0": "completed", "1": "lost", "2": "interrupted"}
    assert rows["1"]["error"] == "the job ended before the run finished (killed)"
    assert json.loads((tmp_path / "1" / "results.json").read_text())["status"] == "lost"
