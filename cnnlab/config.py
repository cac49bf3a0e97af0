"""Checks a composed run config before any data is loaded, so mistakes fail in seconds with one line
naming the key, the bad value and what is allowed."""

from __future__ import annotations

import inspect
import numbers
import types
import typing
from typing import Any, Callable

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import ConfigError
from cnnlab.models.keras_weights import check_keras_weights
from cnnlab.models.pretrained import without_pretrained_weights
from cnnlab.training.module import RUNTIME_KEYS, build_network
from cnnlab.training.precision import valid_precisions

# groups whose keys are constructor arguments of their `_target_`
TARGET_GROUPS = ("model.net", "activation", "data", "optim", "scheduler", "freeze", "loss")
TEST_WEIGHTS = ("best", "last")
# key -> (predicate, description of the allowed range)
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "optim.lr": (lambda v: v > 0, "a learning rate > 0, e.g. 1e-3"),
    "optim.weight_decay": (lambda v: v >= 0, ">= 0"),
    "data.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "data.img_size": (lambda v: v >= 8, "an integer >= 8"),
    "trainer.max_epochs": (lambda v: v >= 1 or v == -1, "an integer >= 1 (or -1 for no limit)"),
    "callbacks.early_stopping.patience": (lambda v: v >= 0, "an integer >= 0"),
    "seed": (lambda v: v == int(v) and 0 <= v < 2**32, "an integer in 0..4294967295 (NumPy's seed range)"),
}


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first problem found in ``cfg``."""
    _check_model_keys(cfg.model)
    for group in TARGET_GROUPS:
        node = OmegaConf.select(cfg, group)
        if node is not None and node.get("_target_"):
            _check_arguments(group, node)
    for key, (allowed, description) in RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and (not _is_number(value) or not allowed(value)):
            raise ConfigError(f"{key}={value!r} is invalid: expected {description}")
    _check_precision(cfg)
    if cfg.get("test_weights") not in TEST_WEIGHTS:
        raise ConfigError(
            f"test_weights={cfg.get('test_weights')!r} is invalid: expected one of {', '.join(TEST_WEIGHTS)}"
        )
    _check_fold(cfg)
    if cfg.data.get("img_size") is not None:  # else the data's native size: train() checks it once known
        check_network(cfg, cfg.data.img_size)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_precision(cfg: DictConfig) -> None:
    precision = OmegaConf.select(cfg, "trainer.precision")
    if precision is not None and str(precision) not in valid_precisions():
        raise ConfigError(
            f"trainer.precision={precision!r} is invalid: expected one of {', '.join(valid_precisions())}"
        )


def _check_fold(cfg: DictConfig) -> None:
    folds, fold = cfg.data.get("num_folds"), cfg.data.get("fold")
    if folds is None or fold is None:
        return
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"data.num_folds={folds!r} is invalid: expected an integer >= 2 (or null for no folds)")
    if not isinstance(fold, int) or not 0 <= fold < folds:
        raise ConfigError(f"data.fold={fold!r} is out of range: expected 0..{folds - 1} for data.num_folds={folds}")


def _check_arguments(group: str, node: DictConfig) -> None:
    """Unknown keys and values of the wrong type, judged against the target's signature."""
    try:
        target = get_object(node._target_)
    except Exception as error:
        raise ConfigError(f"{group}._target_={node._target_!r} cannot be imported: {error}") from None
    signature, hints = _signature(target)
    if signature is None:
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    for key, value in node.items():
        if key.startswith("_"):
            continue
        if key not in signature.parameters:
            if not takes_any:
                valid = sorted(k for k in signature.parameters if k not in ("self", "params", "optimizer"))
                raise ConfigError(f"{group}.{key} is not an option of {node._target_}; valid keys: {valid}")
            continue
        if isinstance(value, DictConfig) and value.get("_target_"):  # a nested object, e.g. data.augment
            _check_arguments(f"{group}.{key}", value)
            continue
        expected = hints.get(key)
        if expected is not None and not _matches(value, expected):
            problem = "is invalid" if typing.get_origin(expected) is typing.Literal else "has the wrong type"
            raise ConfigError(f"{group}.{key}={value!r} {problem}: expected {_type_name(expected)}")


def _check_model_keys(model: DictConfig) -> None:
    """A model config holds ``net`` and the runtime switches; anything else is a builder argument out of place."""
    for key in model:
        if key != "net" and key not in RUNTIME_KEYS:
            raise ConfigError(
                f"model.{key} is not a model option: the network's own arguments go under model.net "
                f"(model.net.{key}=...); model.* holds net, {', '.join(RUNTIME_KEYS)}"
            )


def _signature(target: Any) -> tuple[inspect.Signature | None, dict[str, Any]]:
    """The target's parameters and type hints; a class whose ``__init__`` passes ``**kwargs`` on to its base
    class (the DataModules) gets the base's parameters too, so their keys are checked as well."""
    functions = (
        [c.__init__ for c in inspect.getmro(target) if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    )
    parameters: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    try:
        for function in functions:
            own = inspect.signature(function).parameters
            parameters.update(
                {k: p for k, p in own.items() if k not in parameters and p.kind is not inspect.Parameter.VAR_KEYWORD}
            )
            hints = {**typing.get_type_hints(function), **hints}
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.values()):
                break
        else:
            parameters["kwargs"] = inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)
    except (TypeError, ValueError, NameError):
        return None, {}
    return inspect.Signature(list(parameters.values())), hints


SIMPLE_TYPES = (bool, int, float, str)


def _matches(value: Any, expected: Any) -> bool:
    """Whether ``value`` fits an annotation made of bool/int/float/str/None or a Literal of choices; True
    for anything richer."""
    if typing.get_origin(expected) is typing.Literal:
        return value in typing.get_args(expected)
    is_union = typing.get_origin(expected) in (typing.Union, types.UnionType)
    options = typing.get_args(expected) if is_union else (expected,)
    if not all(o in SIMPLE_TYPES or o is type(None) for o in options):
        return True
    if value is None:
        return type(None) in options
    if isinstance(value, bool):
        return bool in options
    if isinstance(value, int):
        return int in options or float in options
    if isinstance(value, float):
        return float in options
    return isinstance(value, str) and str in options


def _type_name(expected: Any) -> str:
    if typing.get_origin(expected) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(expected)))
    options = typing.get_args(expected) or (expected,)
    return " or ".join("null" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)


def check_network(cfg: DictConfig, img_size: int) -> None:
    """Build the network once (without pretrained weights) and run it on zeros of ``img_size``: catches
    images too small for the model and freeze counts beyond its layers."""
    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    check_keras_weights(net_cfg, img_size)  # before any work: the file must be there
    net_cfg = without_pretrained_weights(net_cfg)
    activation = OmegaConf.to_container(cfg.activation, resolve=True) if cfg.get("activation") else None
    try:
        net = build_network(net_cfg, activation, num_classes=2, in_chans=3, img_size=img_size)
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, img_size, img_size))
    except (RuntimeError, ValueError, InstantiationException) as error:
        if isinstance(error.__cause__ or error, ConfigError):  # the builder named the bad key (model.net.name)
            raise (error.__cause__ or error) from None
        reason = str(error.__cause__ or error).splitlines()[0]
        raise ConfigError(
            f"data.img_size={img_size} is too small for model={cfg.model.net._target_} ({reason}); "
            "use a larger data.img_size"
        ) from None
    for group, use in (("freeze", lambda policy: policy.apply(net)), ("loss", lambda loss: loss.bind(net))):
        node = cfg.get(group)
        if node is not None and node.get("_target_"):
            try:
                use(instantiate(node))
            except ValueError as error:
                raise ConfigError(str(error)) from None
