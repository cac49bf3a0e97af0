"""``train(cfg)``: one run from a composed config to results.json."""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cnnlab.data.base import ImageDataModule
from cnnlab.evaluation.report import write_run_report
from cnnlab.evaluation.wandb_views import finish_wandb, log_config, prepare_wandb
from cnnlab.training.callbacks import EpochTimer
from cnnlab.training.module import ImageClassifier

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group that has a ``_target_``."""
    return [instantiate(c) for c in (group or {}).values() if c is not None and "_target_" in c]


def _to_dict(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def build_datamodule(cfg: DictConfig) -> ImageDataModule:
    return instantiate(cfg.data)


def build_module(cfg: DictConfig, datamodule: ImageDataModule) -> ImageClassifier:
    datamodule.setup()
    return ImageClassifier(
        model=_to_dict(cfg.model),
        activation=_to_dict(cfg.get("activation")),
        optimizer=_to_dict(cfg.optim),
        scheduler=_to_dict(cfg.get("scheduler")),
        freeze=_to_dict(cfg.get("freeze")),
        num_classes=datamodule.num_classes,
        in_chans=datamodule.in_chans,
        img_size=datamodule.img_size,
        class_names=datamodule.class_names,
        preprocessing=datamodule.preprocessing(),
    )


def _resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    if ckpt_path == "last":
        path = output_dir / "checkpoints" / "last.ckpt"
        if not path.exists():
            raise FileNotFoundError(f"ckpt_path=last but there is no {path}; pass the run's hydra.run.dir")
        return str(path)
    return ckpt_path


def _write_results(output_dir: Path, results: dict) -> None:
    path = output_dir / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, path)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint (lowest val/loss); write and return results.json."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"status": "running"}
    start = time.perf_counter()
    try:
        L.seed_everything(cfg.seed, workers=True)
        datamodule = build_datamodule(cfg)
        module = build_module(cfg, datamodule)
        callbacks = _instantiate_all(cfg.get("callbacks"))
        prepare_wandb(cfg)
        loggers = _instantiate_all(cfg.get("logger"))
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

        results.update(
            num_params=sum(p.numel() for p in module.net.parameters()),
            trainable_params=sum(p.numel() for p in module.trainable_parameters()),
            num_classes=datamodule.num_classes,
            split_sizes={k: len(v) for k, v in datamodule.splits.items()},
        )
        log_config(trainer.loggers, cfg)

        trainer.fit(module, datamodule=datamodule, ckpt_path=_resolve_ckpt_path(cfg.get("ckpt_path"), output_dir))
        results["train_time_sec"] = round(time.perf_counter() - start, 3)
        results.update(_fit_results(trainer))

        if cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
            results.update({k: float(v) for k, v in (test_metrics[0] if test_metrics else {}).items()})
            write_run_report(trainer, module, datamodule, output_dir, results)
        results["status"] = "completed"
        return results
    except BaseException as error:
        results["status"] = "failed"
        results["error"] = f"{type(error).__name__}: {error}"
        results["traceback"] = traceback.format_exc()
        raise
    finally:
        results["wall_time_sec"] = round(time.perf_counter() - start, 3)
        _write_results(output_dir, results)
        finish_wandb(failed=results["status"] == "failed")


def _fit_results(trainer: L.Trainer) -> dict[str, Any]:
    timer = next((c for c in trainer.callbacks if isinstance(c, EpochTimer)), None)
    ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best_epoch = None
    if ckpt is not None and ckpt.best_model_path:
        best_epoch = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)["epoch"]
    metrics = trainer.callback_metrics
    return {
        "epochs_run": trainer.current_epoch,
        "best_epoch": best_epoch,
        "sec_per_epoch": timer.sec_per_epoch if timer else None,
        "val/acc_best": float(metrics["val/acc_best"]) if "val/acc_best" in metrics else None,
        "val/loss_best": float(ckpt.best_model_score) if ckpt is not None and ckpt.best_model_score is not None else None,
    }
