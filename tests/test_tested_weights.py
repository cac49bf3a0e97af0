"""``test_weights``: the test evaluates the weights the study tested, and results.json says which epoch."""

from __future__ import annotations

import pytest
from conftest import read_results, run_dirs

RUN = ["debug=fast", "callbacks.progress_bar=null", "trainer.max_epochs=4", "trainer.limit_train_batches=4", "seed=5"]


def test_best_and_last_weights_are_the_epochs_they_name(cnnlab):
    cnnlab(*RUN, "test_weights=best", "hydra.run.dir=outputs/best")
    cnnlab(*RUN, "test_weights=last", "hydra.run.dir=outputs/last")
    best, last = read_results(cnnlab.cwd / "outputs/best"), read_results(cnnlab.cwd / "outputs/last")
    assert best["epochs_run"] == last["epochs_run"] == 4 and best["best_epoch"] == last["best_epoch"]
    assert best["tested_epoch"] == best["best_epoch"]
    assert last["tested_epoch"] == 3
    # the same seed trains the same weights: the two tests agree exactly when they test the same epoch
    if best["best_epoch"] == 3:
        assert best["test/loss"] == pytest.approx(last["test/loss"], abs=1e-6)
    else:
        assert best["test/loss"] != pytest.approx(last["test/loss"], abs=1e-6)


def test_unknown_choice_is_one_line(cnnlab):
    result = cnnlab("debug=fast", "test_weights=final", check=False)
    assert result.returncode != 0
    assert "test_weights='final' is invalid: expected one of best, last" in result.stderr.strip().splitlines()[-1]
    assert not run_dirs(cnnlab.cwd) or read_results(run_dirs(cnnlab.cwd)[0])["status"] == "failed"
