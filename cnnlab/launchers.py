"""cnnlab's Hydra launchers: ``hydra/launcher=joblib`` (:mod:`cnnlab.joblib_sweep`) and ``hydra/launcher=slurm``
(:mod:`cnnlab.slurm`), made known to Hydra."""

from __future__ import annotations

import importlib

LAUNCHERS = {
    "hydra_plugins.cnnlab_joblib.launcher": "JoblibLauncher",
    "hydra_plugins.cnnlab_slurm.launcher": "SlurmLauncher",
}


def register_launchers() -> None:
    """Register cnnlab's launchers by name. Hydra finds plugins by listing the ``hydra_plugins`` package's
    folders, which misses an editable install's (``pip install -e``). A launcher whose Hydra plugin is not
    installed (the SLURM one without the ``[slurm]`` extra) is left out."""
    from hydra.core.plugins import Plugins

    for module, name in LAUNCHERS.items():
        try:
            launcher = getattr(importlib.import_module(module), name)
        except ImportError:
            continue
        Plugins.instance().register(launcher)
