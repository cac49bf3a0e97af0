"""``cross_validate=true``: every fold in one job, the job scored by the mean over folds (S1's search)."""

from __future__ import annotations

import json
import signal
import statistics

import pytest
from conftest import read_results, start_cli, wait_for_file
from fakedata import write_image_folder

from cnnlab.evaluation.summary import find_run_dirs

FAST = ["debug=fast", "callbacks.progress_bar=null", "data=imagefolder", "data.num_folds=3", "cross_validate=true"]


def test_every_fold_trains_and_the_run_reports_their_mean(cnnlab, tmp_path):
    root = write_image_folder(tmp_path / "photos", per_class=9)
    cnnlab(*FAST, f"data.root={root}", "hydra.run.dir=outputs/cv")
    run = cnnlab.cwd / "outputs/cv"
    results = read_results(run)
    folds = [read_results(run / f"fold_{k}") for k in range(3)]
    assert results["status"] == "completed" and [f["status"] for f in folds] == ["completed"] * 3
    assert [f["test/acc"] for f in results["folds"]] == [f["test/acc"] for f in folds]
    for key in ("val/acc_best", "test/acc", "test/loss"):
        assert results[key] == pytest.approx(statistics.mean(f[key] for f in folds))
        assert results[f"{key}_std"] == pytest.approx(statistics.stdev(f[key] for f in folds))
    # each fold held out its own third of the images for validation and test
    held_out = [
        set((run / f"fold_{k}/data/val_files.txt").read_text().split())
        | set((run / f"fold_{k}/data/test_files.txt").read_text().split())
        for k in range(3)
    ]
    assert all(len(held) == 9 for held in held_out) and not (held_out[0] & held_out[1] or held_out[1] & held_out[2])
    assert all((run / f"fold_{k}/checkpoints/best.ckpt").is_file() for k in range(3))
    assert find_run_dirs([cnnlab.cwd / "outputs"]) == [run]  # the folds are the run's, not runs of their own

    # rerun in place with ckpt_path=last: completed folds are kept, not trained again
    mtimes = [(run / f"fold_{k}/results.json").stat().st_mtime_ns for k in range(3)]
    cnnlab(*FAST, f"data.root={root}", "hydra.run.dir=outputs/cv", "ckpt_path=last")
    assert [(run / f"fold_{k}/results.json").stat().st_mtime_ns for k in range(3)] == mtimes
    assert read_results(run)["test/acc"] == results["test/acc"]


def test_a_sweep_scores_each_job_by_its_fold_mean(cnnlab, tmp_path):
    root = write_image_folder(tmp_path / "photos", per_class=9)
    cnnlab("-m", *FAST, f"data.root={root}", "optim.lr=1e-3,1e-2")
    sweep = next((cnnlab.cwd / "outputs" / "multirun").glob("*/*"))
    summary = (sweep / "summary.md").read_text()
    assert "Summary of 2 runs" in summary
    for job in ("0", "1"):
        results = read_results(sweep / job)
        assert len(results["folds"]) == 3 and f"| {results['val/acc_best']:.4f} |" in summary


def test_without_folds_it_says_what_to_set(cnnlab):
    result = cnnlab("debug=fast", "cross_validate=true", check=False)
    assert result.returncode != 0
    assert "cross_validate=true needs data.num_folds >= 2" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    json.dumps(result.stderr)


def test_sigterm_in_a_fold_names_the_fold_and_the_command_that_resumes_the_job(cnnlab, tmp_path):
    root = write_image_folder(tmp_path / "photos", per_class=9)
    args = [*FAST, f"data.root={root}", "hydra.run.dir=outputs/cv", "seed=3"]
    process = start_cli([*args, "trainer.max_epochs=500", "callbacks.early_stopping=null"], cnnlab.cwd)
    run = cnnlab.cwd / "outputs/cv"
    wait_for_file("outputs/cv/fold_0/checkpoints/last.ckpt", cnnlab.cwd, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, process.stderr.read()[-5000:]
    message = process.stderr.read().strip().splitlines()[-1]
    assert message == (
        f"cnnlab: interrupted by SIGTERM; rerun with ckpt_path=last hydra.run.dir={run} to keep the finished folds "
        "and continue fold_0 exactly from its newest checkpoint"
    )
    results = read_results(run)
    assert results["status"] == "interrupted"
    assert results["error"] == f"fold 0 ({run / 'fold_0'}): interrupted by SIGTERM"
    assert read_results(run / "fold_0")["status"] == "interrupted"

    cnnlab(*args, "ckpt_path=last", "trainer.max_epochs=3")  # the command the message gives
    resumed = read_results(run)
    assert resumed["status"] == "completed" and [fold["epochs_run"] for fold in resumed["folds"]] == [3, 3, 3]
