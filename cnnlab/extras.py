"""Optional features and the pip extra that installs each: a missing one is one line naming the install
command, not an ImportError traceback or Hydra's "could not load" message."""

from __future__ import annotations

import importlib
import re

from cnnlab.errors import CnnlabError

# module -> (extra, the feature that needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("export", "cnnlab-export format=onnx"),
    "onnxruntime": ("export", "cnnlab-export format=onnx"),
    "hydra_plugins.hydra_optuna_sweeper": ("search", "hparams_search (the Optuna sweeper)"),
    "optuna": ("search", "hparams_search (the Optuna sweeper)"),
    "hydra_plugins.hydra_submitit_launcher": ("slurm", "hydra/launcher=slurm (the submitit launcher)"),
    "submitit": ("slurm", "hydra/launcher=slurm (the submitit launcher)"),
    "tensorboard": ("tensorboard", "logger=tensorboard"),
    "mlflow": ("mlflow", "logger=mlflow"),
}
# a config a plugin registers -> the plugin (composing it fails when the plugin is not installed)
PLUGIN_CONFIGS = {
    "hydra/sweeper/optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hydra/launcher/submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
}


class MissingExtra(CnnlabError):
    """An optional feature's package is not installed."""


def missing_extra_message(module: str) -> str:
    """What to install for ``module`` (a key of :data:`EXTRAS`)."""
    extra, feature = EXTRAS[module]
    package = module.rsplit(".", 1)[-1].replace("_", "-")
    return f"{feature} needs {package}, which is not installed: pip install 'cnnlab[{extra}]'"


def is_installed(module: str) -> bool:
    """Whether ``module`` imports."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require(*modules: str) -> None:
    """Raise :class:`MissingExtra` for the first of ``modules`` that is not installed."""
    for module in modules:
        if not is_installed(module):
            raise MissingExtra(missing_extra_message(module))


def missing_extra(error: BaseException) -> str | None:
    """What to install when ``error`` (or an exception it was raised from) is the import of an optional
    package failing, e.g. the Optuna sweeper's sampler or the submitit launcher; else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        name = getattr(error, "name", None) if isinstance(error, ImportError) else None
        module = next((m for m in EXTRAS if name and (name == m or name.startswith(m + "."))), None)
        if module is not None:
            return missing_extra_message(module)
        error = error.__cause__ or error.__context__
    return None


def missing_plugin(message: str) -> str | None:
    """For a Hydra composition error that names a plugin's config (``hydra/sweeper/optuna``) of a plugin
    that is not installed: what to install; else None."""
    for config, plugin in PLUGIN_CONFIGS.items():
        if re.search(re.escape(config) + r"\b", message) and not is_installed(plugin):
            return missing_extra_message(plugin)
    return None
