"""Configs that come with a file rather than from the user (a checkpoint's hyperparameters, a run dir's
``.hydra/config.yaml``), read as data.

Building a network from them runs whatever ``_target_`` they name: a module prefix is no boundary (torch
alone holds callables that compile and run source). So, unless the user passes ``trust_checkpoint=true``,
such a config may only name the exact classes and functions below, each at the one place cnnlab's own
configs put it, with plain values (None, bool, int, float, str without ``${`` interpolation, lists and
dicts of them) everywhere else. Of Hydra's special keys only ``_target_`` and ``_partial_`` (a bool) are
read, and only at those places; ``_args_``, ``_recursive_``, ``_convert_`` and a ``_target_`` anywhere
else are refused. tests/test_security.py checks that every ``_target_`` in conf/ is listed here.
"""

from __future__ import annotations

from typing import Any, Mapping

from cnnlab.errors import CnnlabError

MODEL_BUILDERS = frozenset(
    {
        "cnnlab.models.cifar_cnns.AlexNetCIFAR",
        "cnnlab.models.cifar_cnns.CNNBaselineS2",
        "cnnlab.models.cifar_cnns.CNNBaselineS4",
        "cnnlab.models.cifar_cnns.CNNImprovedS4",
        "cnnlab.models.cifar_cnns.CNNResidualS4",
        "cnnlab.models.keras_applications.KerasApplication",
        "cnnlab.models.keras_applications.ResNet50Keras",
        "cnnlab.models.mobilenet_v1.MobileNetV1",
        "cnnlab.models.mobilenetv3.MobileNetV3",
        "cnnlab.models.pretrained.TimmClassifier",
        "cnnlab.models.pretrained.efficientnetv2_b0",
        "cnnlab.models.pretrained.mobilenetv2",
        "cnnlab.models.pretrained.resnet50_pretrained",
        "cnnlab.models.resnet.ResNet18S2",
        "cnnlab.models.resnet.ResNet50",
    }
)
ACTIVATIONS = frozenset(
    {
        "cnnlab.nn.activations.ELU",
        "cnnlab.nn.activations.GELU",
        "cnnlab.nn.activations.HardELU",
        "cnnlab.nn.activations.HardSwish",
        "cnnlab.nn.activations.LReLU",
        "cnnlab.nn.activations.LeakyReLU",
        "cnnlab.nn.activations.ReLU",
        "cnnlab.nn.activations.SiLU",
    }
)
OPTIMIZERS = frozenset(
    {
        "cnnlab.training.optimizers.KerasRMSprop",
        "torch.optim.Adam",
        "torch.optim.AdamW",
        "torch.optim.RMSprop",
        "torch.optim.SGD",
    }
)
SCHEDULERS = frozenset({"torch.optim.lr_scheduler.CosineAnnealingLR", "torch.optim.lr_scheduler.ReduceLROnPlateau"})
FREEZE_POLICIES = frozenset({"cnnlab.training.freeze.TopK", "cnnlab.training.freeze.TwoStage"})
LOSSES = frozenset({"cnnlab.training.loss.CrossEntropyLoss"})
DATAMODULES = frozenset(
    {
        "cnnlab.data.cifar10.CIFAR10DataModule",
        "cnnlab.data.digits.DigitsDataModule",
        "cnnlab.data.eurosat.EuroSATDataModule",
        "cnnlab.data.fruits360.Fruits360DataModule",
        "cnnlab.data.imagefolder.ImageFolderDataModule",
        "cnnlab.data.torchvision_dataset.TorchvisionDataModule",
    }
)
AUGMENTATIONS = frozenset({"cnnlab.data.augment.BatchAugment"})

# where a `_target_` may stand (key path) and what it may name there
CHECKPOINT_TARGETS: dict[tuple[str, ...], frozenset[str]] = {
    ("model", "net"): MODEL_BUILDERS,
    ("model",): MODEL_BUILDERS,  # checkpoints written before the builder's arguments moved under `net`
    ("activation",): ACTIVATIONS,
    ("optimizer",): OPTIMIZERS,
    ("scheduler",): SCHEDULERS,
    ("freeze",): FREEZE_POLICIES,
    ("loss",): LOSSES,
}
RUN_DATA_TARGETS: dict[tuple[str, ...], frozenset[str]] = {("data",): DATAMODULES, ("data", "augment"): AUGMENTATIONS}

PLAIN_TYPES = (type(None), bool, int, float, str)


class UntrustedConfigError(CnnlabError):
    """A config that came with a file names code cnnlab does not build from files, or holds non-plain values."""


def _is_special(key: Any) -> bool:
    return isinstance(key, str) and len(key) > 2 and key.startswith("_") and key.endswith("_")


def _refusal(path: tuple[Any, ...], why: str) -> str:
    return f"{'.'.join(map(str, path))} {why}"


def _problem(
    node: Any, path: tuple[Any, ...], targets: Mapping[tuple[str, ...], frozenset[str]], depth: int
) -> str | None:
    """The first key path (with why) where ``node`` is not plain data or names code off the allowlist."""
    position = path[depth:]
    if isinstance(node, Mapping):
        for key, value in sorted(node.items(), key=lambda item: item[0] != "_target_"):  # what it would run first
            here = (*path, key)
            if not isinstance(key, str):
                return _refusal(here, "is not a string key")
            if key == "_target_" and position in targets:
                if value is not None and value not in targets[position]:
                    return _refusal(here, f"= {value!r} is not one of the classes cnnlab builds there")
            elif key == "_partial_" and position in targets:
                if not isinstance(value, bool):
                    return _refusal(here, f"= {value!r} is not true or false")
            elif _is_special(key):
                return _refusal(here, "is a Hydra instantiation key cnnlab does not read from files")
            elif (problem := _problem(value, here, targets, depth)) is not None:
                return problem
        return None
    if isinstance(node, (list, tuple)):
        return next((p for i, v in enumerate(node) if (p := _problem(v, (*path, i), targets, depth)) is not None), None)
    if not isinstance(node, PLAIN_TYPES):
        return _refusal(path, f"is a {type(node).__name__}, not a plain value")
    if isinstance(node, str) and "${" in node:
        return _refusal(path, f"= {node!r} is an interpolation, not a plain value")
    return None


def check_untrusted(
    config: Any, source: str, prefix: tuple[str, ...], targets: Mapping[tuple[str, ...], frozenset[str]], advice: str
) -> None:
    """Raise :class:`UntrustedConfigError` (one line: ``source``, the key path, ``advice``) unless ``config``
    is plain data naming only ``targets``; key paths are shown below ``prefix``, which ``targets`` leave out."""
    problem = _problem(config, prefix, targets, len(prefix))
    if problem is not None:
        raise UntrustedConfigError(f"{source}: {problem}; {advice}")


def check_checkpoint_hparams(hparams: Any, path: str) -> None:
    """Refuse a checkpoint whose hyperparameters would build anything but cnnlab's own network parts."""
    check_untrusted(
        hparams,
        f"checkpoint {path}",
        ("hyper_parameters",),
        CHECKPOINT_TARGETS,
        "refused (it would run that code). Add trust_checkpoint=true only if you trust the file's source",
    )


def check_run_data(data: Any, path: str) -> None:
    """Refuse a run config whose ``data`` section would build anything but one of cnnlab's datamodules."""
    check_untrusted(
        {"data": data},
        f"run config {path}",
        (),
        RUN_DATA_TARGETS,
        "refused (it would run that code). Choose the dataset with data=<name>, or add trust_checkpoint=true "
        "only if you trust the run directory",
    )
