"""``cross_validate=true``: every fold of ``data.num_folds`` trained in one job, scored by the mean over folds.

This is what scikit-learn's ``RandomizedSearchCV(cv=k)`` does for each candidate (S1's search): a sweeper
(Optuna) then sees one job per candidate, whose value is the candidate's mean validation score. Each fold is
a complete run in ``<run dir>/fold_<k>/`` (checkpoints, metrics, report); the run dir's results.json holds
the mean and standard deviation of every metric over the folds and each fold's own figures.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from cnnlab.errors import ConfigError
from cnnlab.train import error_summary, train, write_results
from cnnlab.training.checkpoints import newest_checkpoint

FOLD_KEYS = (
    "status",
    "test/acc",
    "test/f1_macro",
    "test/auroc_macro",
    "test/loss",
    "val/acc_best",
    "val/loss_best",
    "epochs_run",
    "tested_epoch",
)


def fold_dir(output_dir: Path, fold: int) -> Path:
    return output_dir / f"fold_{fold}"


def fold_config(cfg: DictConfig, fold: int, output_dir: Path) -> DictConfig:
    """``cfg`` training fold ``fold`` into its own directory; ``ckpt_path=last`` resumes only a fold that has a
    checkpoint."""
    fold_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # interpolations follow output_dir
    directory = fold_dir(output_dir, fold)
    with open_dict(fold_cfg):
        fold_cfg.data.fold = fold
        fold_cfg.paths.output_dir = str(directory)
        fold_cfg.cross_validate = False
        if cfg.get("ckpt_path") == "last" and newest_checkpoint(directory) is None:
            fold_cfg.ckpt_path = None
    return fold_cfg


def _completed(directory: Path) -> dict[str, Any] | None:
    path = directory / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    return results if results.get("status") == "completed" else None


def _mean_results(fold_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each fold's key figures, and the mean and standard deviation over folds of every metric."""
    results: dict[str, Any] = {"folds": [{key: r.get(key) for key in FOLD_KEYS} for r in fold_results]}
    metrics = sorted({k for r in fold_results for k, v in r.items() if "/" in k and isinstance(v, (int, float))})
    for key in metrics:
        values = [r[key] for r in fold_results if isinstance(r.get(key), (int, float))]
        if len(values) == len(fold_results):
            results[key] = statistics.mean(values)
            results[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return results


def cross_validate(cfg: DictConfig) -> dict[str, Any]:
    """Train fold 0..k-1 of ``data.num_folds`` one after the other; write and return the mean results.

    Rerun in the same run dir with ``ckpt_path=last``, completed folds are kept and the interrupted one resumes.
    A fold that fails or is interrupted ends the job with that status, naming the fold.
    """
    folds = cfg.data.get("num_folds")
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ConfigError(f"cross_validate=true needs data.num_folds >= 2 (got {folds!r}), e.g. data.num_folds=5")
    output_dir = Path(cfg.paths.output_dir)
    write_results(output_dir, {"status": "running"})  # a killed job is left marked "running"
    fold_results: list[dict[str, Any]] = []
    for fold in range(folds):
        kept = _completed(fold_dir(output_dir, fold)) if cfg.get("ckpt_path") == "last" else None
        try:
            fold_results.append(kept or train(fold_config(cfg, fold, output_dir), fold_of=output_dir))
        except BaseException as error:
            interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
            write_results(
                output_dir,
                {
                    **_mean_results(fold_results),
                    "status": "interrupted" if interrupted else "failed",
                    "error": f"fold {fold} ({fold_dir(output_dir, fold)}): {error_summary(error)}",
                },
            )
            raise
    results = {
        "status": "completed",
        **_mean_results(fold_results),
        "num_params": fold_results[0].get("num_params"),
        "study": fold_results[0].get("study"),  # compared by its mean over the folds
    }
    write_results(output_dir, results)
    return results
