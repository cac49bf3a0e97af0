"""The ``cnnlab-eval`` command: the run report (``report/``) for a checkpoint on any split or dataset.

The checkpoint rebuilds its network and knows its class names and preprocessing; the data comes from
``data=...`` or, by default, from the checkpoint's run config, so the default reproduces the run's own
test-split report.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from cnnlab.data.base import ImageDataModule, Split
from cnnlab.errors import CnnlabError, exit_on_user_error
from cnnlab.evaluation.report import read_history, write_report
from cnnlab.evaluation.summary import read_overrides
from cnnlab.inference import load_classifier, predict_split
from cnnlab.run_dirs import register_resolver
from cnnlab.training.checkpoints import run_dir_of
from cnnlab.untrusted import check_run_data


def build_datamodule(cfg: DictConfig, run_dir: Path, img_size: int) -> ImageDataModule:
    """The chosen ``data`` config, else the run's own, at the checkpoint's image size, without augmentation.

    The run's config came with the checkpoint, not from the user: unless ``trust_checkpoint=true`` it is
    resolved and read as data (:func:`cnnlab.untrusted.check_run_data`) before anything is built from it.
    """
    if cfg.get("data") is not None:
        return instantiate(cfg.data, img_size=img_size, augment=None)
    run_config = run_dir / ".hydra" / "config.yaml"
    if not run_config.exists():
        raise CnnlabError(f"No {run_config} to take the dataset from: choose one with data=<name>")
    try:
        run_cfg = OmegaConf.load(run_config)
        run_cfg.paths = cfg.paths  # data_dir and output_dir of this evaluation, the run's seed
        data = OmegaConf.to_container(run_cfg.data, resolve=True)
    except Exception as error:
        raise CnnlabError(
            f"cannot read the data section of {run_config} ({type(error).__name__}: {error}); "
            "choose the dataset with data=<name>"
        ) from None
    if not isinstance(data, dict):
        raise CnnlabError(f"{run_config} has no data section; choose the dataset with data=<name>")
    data.pop("output_dir", None)  # runs before the datamodules stopped writing run files
    if not cfg.trust_checkpoint:
        check_run_data(data, str(run_config))
    return instantiate(data, img_size=img_size, augment=None)


def in_checkpoint_classes(split: Split, names: list[str], checkpoint_names: list[str]) -> Split:
    """``split`` with labels renumbered to the checkpoint's class order (datasets may list classes differently)."""
    unknown = [n for n in names if n not in checkpoint_names]
    if unknown:
        raise CnnlabError(f"Classes {unknown} of the dataset are not among the checkpoint's {checkpoint_names}")
    index = torch.tensor([checkpoint_names.index(n) for n in names], device=split.labels.device)
    return dataclasses.replace(split, labels=index[split.labels])


register_resolver()  # conf/eval.yaml names its run dir with ${unique_dir:...}


@hydra.main(version_base="1.3", config_path="pkg://cnnlab.conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    """Write ``report/`` and ``results.json`` (``<split>/acc``, ``/f1_macro``, ``/auroc_macro``); return the
    accuracy."""
    ckpt_path = Path(to_absolute_path(cfg.ckpt_path))
    module = load_classifier(ckpt_path, cfg.trust_checkpoint)
    hparams = module.hparams
    run_dir = run_dir_of(ckpt_path)
    datamodule = build_datamodule(cfg, run_dir, hparams.preprocessing["img_size"])
    datamodule.rgb = hparams.preprocessing["in_chans"] == 3  # gray data for an RGB network, as in its training
    datamodule.prepare_data()
    datamodule.setup()
    split = in_checkpoint_classes(
        datamodule.evaluation_split(cfg.split), datamodule.class_names, list(hparams.class_names)
    )
    batch_size = cfg.batch_size or datamodule.eval_batch_size
    run_results_path = run_dir / "results.json"
    run_results = json.loads(run_results_path.read_text()) if run_results_path.exists() else {}
    # the run's precision (fp32 for runs that predate its record), so that the logits equal its test's
    predictions = predict_split(module, split, batch_size, run_results.get("runtime", {}).get("precision", "32-true"))
    run_results.setdefault("num_params", sum(p.numel() for p in module.net.parameters()))
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    report = write_report(
        predictions,
        output_dir / "report",
        split=cfg.split,
        history=read_history(run_dir / "metrics.csv"),
        results=run_results,
        hparams=dict(hparams),
        overrides=read_overrides(run_dir),
    )
    accuracy = float(report.metrics.report["accuracy"])
    results = {
        "status": "completed",
        "ckpt_path": str(ckpt_path),
        "split": cfg.split,
        f"{cfg.split}/acc": accuracy,
        f"{cfg.split}/f1_macro": float(report.metrics.report["macro avg"]["f1-score"]),
        f"{cfg.split}/auroc_macro": report.metrics.auroc_macro,
        "num_params": run_results["num_params"],
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"Report for {ckpt_path} on {cfg.split}: {output_dir / 'report' / 'report.md'}")
    return accuracy


if __name__ == "__main__":
    main()
