"""A registry from model name to builder, so tools can list and build models by name."""

from __future__ import annotations

from typing import Callable

from torch import nn

ModelBuilder = Callable[..., nn.Module]

MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register a model class or builder function under ``name``."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of every registered model."""
    _import_all()
    return sorted(MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` (keyword arguments as in its YAML)."""
    _import_all()
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def _import_all() -> None:
    """Import every module in ``cnnlab.models`` so their ``@register_model`` calls run."""
    import importlib
    import pkgutil

    import cnnlab.models as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
