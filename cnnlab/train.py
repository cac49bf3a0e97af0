"""``train(cfg)``: one run from a composed config to results.json."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from cnnlab.config import check_network, validate
from cnnlab.console import per_class_counts
from cnnlab.data.base import ImageDataModule
from cnnlab.environment import environment
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import plots
from cnnlab.evaluation.data_plots import start_data_plots
from cnnlab.evaluation.report import read_history, write_run_report
from cnnlab.evaluation.studies import study_of_run, update_comparison
from cnnlab.evaluation.wandb_views import finish_wandb, log_config, log_report, prepare_wandb
from cnnlab.models.complexity import count_macs
from cnnlab.models.pretrained import is_pretrained, pretrained_normalization
from cnnlab.training.allocator import huge_pages_requested, keep_freed_memory, malloc_tuned, preloaded_allocator
from cnnlab.training.callbacks import EpochTimer
from cnnlab.training.checkpoints import check_compatible, load_checkpoint, resolve_checkpoint
from cnnlab.training.distributed import is_global_zero
from cnnlab.training.freeze import trainable_base_params
from cnnlab.training.interrupts import (
    interrupt_message,
    requeued_checkpoint,
    sigterm_interrupts,
    slurm_trainer_options,
    stopping_signal,
)
from cnnlab.training.loggers import RunCSVLogger, require_logger_packages
from cnnlab.training.module import ImageClassifier
from cnnlab.training.precision import run_precision

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group that has a ``_target_``."""
    return [instantiate(c) for c in (group or {}).values() if c is not None and "_target_" in c]


def _to_dict(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def build_datamodule(cfg: DictConfig) -> ImageDataModule:
    """The run's datamodule, not yet prepared or set up; without data.mean/std, inputs get the normalization
    a pretrained backbone's weights expect, and for one single-channel data becomes RGB."""
    net = _to_dict(cfg.model.net)
    own = cfg.data.get("mean") is not None
    datamodule = instantiate(cfg.data, **({} if own else pretrained_normalization(net)))
    datamodule.rgb = is_pretrained(net)
    return datamodule


def prepare_datamodule(cfg: DictConfig, trainer: L.Trainer) -> ImageDataModule:
    """The run's datamodule, its data downloaded and decoded into the cache, and set up; global rank zero
    writes the run's ``data/`` files.

    Every process calls ``prepare_data`` here, before Lightning has a process group to wait on (torchrun
    and SLURM start all ranks at once): its file locks let one process per node download and decode
    while the others wait, then find the work done. Lightning's own launcher starts the other ranks in
    ``fit``, when rank zero has prepared everything."""
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if trainer.is_global_zero:
        write_data_files(datamodule, Path(cfg.paths.output_dir) / "data")
    return datamodule


def write_data_files(datamodule: ImageDataModule, data_dir: Path) -> None:
    """``summary.json`` (classes, split sizes, images per class, unreadable files) and each split's file
    list (``<split>_files.txt``), and the summary in the log."""
    summary = datamodule.summary()
    log.info(
        "%s: %d classes, split sizes %s", type(datamodule).__name__, len(datamodule.class_names), summary["split_sizes"]
    )
    log.info("images per class: %s", per_class_counts(summary["per_class"]))
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    for name, split in datamodule.splits.items():
        if split.sources:
            (data_dir / f"{name}_files.txt").write_text("\n".join(split.sources) + "\n")


def build_module(cfg: DictConfig, datamodule: ImageDataModule) -> ImageClassifier:
    """The run's LightningModule, shaped by the set-up ``datamodule`` (classes, channels, preprocessing)."""
    return ImageClassifier(
        model=_to_dict(cfg.model),
        activation=_to_dict(cfg.get("activation")),
        optimizer=_to_dict(cfg.optim),
        scheduler=_to_dict(cfg.get("scheduler")),
        freeze=_to_dict(cfg.get("freeze")),
        loss=_to_dict(cfg.get("loss")),
        num_classes=datamodule.num_classes,
        in_chans=datamodule.in_chans,
        img_size=datamodule.img_size,
        class_names=datamodule.class_names,
        preprocessing=datamodule.preprocessing(),
    )


def write_results(output_dir: Path, results: dict) -> None:
    """results.json, replaced atomically, written by the global-zero process only."""
    if not is_global_zero():
        return
    update_comparison(results)  # the study's number beside this run's, once the run has it
    path = output_dir / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, path)


def saved_checkpoint(trainer: L.Trainer, monitored: bool) -> str | None:
    """The checkpoint the callback that monitors a metric saved (``best.ckpt``, lowest val/loss), or the one
    the callback that monitors none saved (``last.ckpt``, the latest epoch); None (the weights in memory)
    without it. Passed to ``trainer.test`` by name: given None, Lightning under SLURM would test an
    ``hpc_ckpt_<n>.ckpt`` if one were there."""
    for callback in trainer.checkpoint_callbacks:
        if (callback.monitor is not None) == monitored and callback.best_model_path:
            return callback.best_model_path
    return None


def train(cfg: DictConfig, fold_of: Path | None = None) -> dict[str, Any]:
    """Fit, then test the weights ``cfg.test_weights`` names; write and return results.json.

    SIGTERM or Ctrl-C saves ``checkpoints/interrupted.ckpt`` (during fit), records the run as interrupted
    and exits with 128 + the signal's number, as a shell reports a process a signal ended. ``fold_of``: the
    cross-validation job's run dir when this run is one of its folds, for the resume command it prints."""
    with sigterm_interrupts():
        return _train(cfg, fold_of)


def _train(cfg: DictConfig, fold_of: Path | None) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    earlier = _read_results(output_dir)  # the same run's stopped start, if this one resumes it
    results: dict[str, Any] = {"status": "running", "environment": environment()}
    write_results(output_dir, results)  # a killed run is left marked "running"
    start = time.perf_counter()
    data_plots = None
    try:
        validate(cfg)
        results["study"] = study_of_run(cfg)  # the study row this run reproduces, and what it reported
        if cfg.get("tune_malloc"):
            keep_freed_memory()
        ckpt_path = resolve_checkpoint(cfg.get("ckpt_path"), output_dir) or requeued_checkpoint(output_dir)
        if ckpt_path and Path(ckpt_path).resolve().is_relative_to(output_dir.resolve()):
            start -= earlier.get("wall_time_sec") or 0.0  # a resume in place: times count every start
        L.seed_everything(cfg.seed, workers=True)
        callbacks = _instantiate_all(cfg.get("callbacks"))
        require_logger_packages(cfg.get("logger"))
        prepare_wandb(cfg)
        loggers = _instantiate_all(cfg.get("logger"))
        precision, precision_reason = run_precision(cfg)
        trainer: L.Trainer = instantiate(
            cfg.trainer, precision=precision, callbacks=callbacks, logger=loggers, **slurm_trainer_options()
        )
        datamodule = prepare_datamodule(cfg, trainer)  # the trainer knows this process's rank
        if cfg.data.get("img_size") is None:  # the data's native size, known now
            check_network(cfg, datamodule.img_size)
        module = build_module(cfg, datamodule)
        if ckpt_path:
            checkpoint = load_checkpoint(ckpt_path, cfg.trust_checkpoint)
            check_compatible(checkpoint, dict(module.hparams), ckpt_path)
            for logger in trainer.loggers:
                if isinstance(logger, RunCSVLogger):
                    logger.rewind(checkpoint["global_step"])
        if trainer.is_global_zero:
            data_plots = start_data_plots(datamodule, output_dir / "report")

        results.update(
            num_params=sum(p.numel() for p in module.net.parameters()),
            trainable_params=sum(p.numel() for p in module.trainable_parameters()),
            num_classes=datamodule.num_classes,
            split_sizes={k: len(v) for k, v in datamodule.splits.items()},
            world_size=trainer.world_size,
            runtime={
                "device": str(trainer.strategy.root_device),
                "precision": precision,
                "precision_reason": precision_reason,
                "channels_last": module.channels_last,
                "compile": bool(cfg.model.get("compile", False)),
                "malloc_tuned": malloc_tuned(),
                "huge_pages": huge_pages_requested(),
                "preloaded_allocator": preloaded_allocator(),
            },
        )
        log_config(trainer.loggers, cfg, results["study"])

        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not cfg.trust_checkpoint)
        results["train_time_sec"] = round(time.perf_counter() - start, 3)
        results.update(_fit_results(trainer))
        results["trainable_params_base"] = trainable_base_params(module.net)  # after fit: two_stage's last stage
        results["macs"] = count_macs(
            module.net, datamodule.in_chans, datamodule.img_size
        )  # after fit: not start-up time

        if cfg.get("test"):
            best = cfg.test_weights == "best"
            tested_checkpoint = saved_checkpoint(trainer, monitored=best)
            results["tested_epoch"] = results["best_epoch"] if best and tested_checkpoint else trainer.current_epoch - 1
            test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=tested_checkpoint, verbose=False)
            results.update({k: float(v) for k, v in (test_metrics[0] if test_metrics else {}).items()})
            if trainer.is_global_zero:
                report = write_run_report(trainer, module, datamodule, output_dir, results)
                log_report(trainer.loggers, report)
                _log_after_test(trainer, {"test/auroc_macro": report.metrics.auroc_macro})
        results["status"] = "completed"
        return results
    except BaseException as error:
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
        stopped = stopping_signal(error)
        results["status"] = "interrupted" if interrupted else "failed"
        results["error"] = error_summary(error)
        if stopped is None and not isinstance(error, CnnlabError):
            results["traceback"] = traceback.format_exc()
        if interrupted:
            _write_learning_curves(output_dir)
        if stopped is not None:
            if is_global_zero():
                print(f"cnnlab: {interrupt_message(stopped, output_dir, fold_of)}", file=sys.stderr)
            raise SystemExit(128 + stopped) from None
        if _is_out_of_memory(error):
            raise CnnlabError(
                f"out of memory with data.batch_size={cfg.data.batch_size}: try a smaller batch, "
                f"e.g. data.batch_size={max(1, cfg.data.batch_size // 2)} ({error})"
            ) from error
        raise
    finally:
        if data_plots is not None:
            data_plots.join()
        results["wall_time_sec"] = round(time.perf_counter() - start, 3)
        write_results(output_dir, results)
        finish_wandb(failed=results["status"] != "completed")


def _read_results(output_dir: Path) -> dict[str, Any]:
    path = output_dir / "results.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _log_after_test(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Metrics the report computes after ``trainer.test`` (AUROC needs every test logit), to the CSV log,
    TensorBoard and MLflow beside the test step's own; W&B shows them in its run summary (``log_report``).
    Each logger is finalized again, as ``trainer.test`` left it."""
    metrics = {name: value for name, value in metrics.items() if not math.isnan(value)}
    for logger in trainer.loggers:
        if metrics and not isinstance(logger, WandbLogger):
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.finalize("success")


def error_summary(error: BaseException) -> str:
    """What results.json says ended a run: the stopping signal, a cnnlab error's own message, or the
    exception's type and message."""
    stopped = stopping_signal(error)
    if stopped is not None:
        return f"interrupted by {stopped.name}"
    return str(error) if isinstance(error, CnnlabError) else f"{type(error).__name__}: {error}"


def _write_learning_curves(output_dir: Path) -> None:
    """The part of the report an unfinished run can have: its curves so far."""
    history = read_history(output_dir / "metrics.csv")
    if history:
        plots.save(plots.learning_curves_figure(history, None), output_dir / "report" / "learning_curves.png")


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def _fit_results(trainer: L.Trainer) -> dict[str, Any]:
    timer = next((c for c in trainer.callbacks if isinstance(c, EpochTimer)), None)
    ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best_epoch = None
    if ckpt is not None and ckpt.best_model_path:
        best_epoch = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)["epoch"]
    metrics = trainer.callback_metrics
    return {
        "epochs_run": trainer.current_epoch,
        "best_epoch": best_epoch,
        "sec_per_epoch": timer.sec_per_epoch if timer else None,
        "val/acc_best": float(metrics["val/acc_best"]) if "val/acc_best" in metrics else None,
        "val/loss_best": float(ckpt.best_model_score)
        if ckpt is not None and ckpt.best_model_score is not None
        else None,
    }
