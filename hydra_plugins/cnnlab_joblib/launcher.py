"""``hydra/launcher=joblib``: hydra-joblib-launcher's launcher, whose sweeps go on when a job's process is killed
(:mod:`cnnlab.joblib_sweep`)."""

from __future__ import annotations

from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as HydraJoblibLauncher


class JoblibLauncher(HydraJoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from cnnlab import joblib_sweep

        return joblib_sweep.launch(self, job_overrides, initial_job_idx)
