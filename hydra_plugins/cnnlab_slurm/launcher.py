"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, with cnnlab's submission, waiting and
reporting (:mod:`cnnlab.slurm`)."""

from __future__ import annotations

from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher


class SlurmLauncher(BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from cnnlab import slurm

        return slurm.launch(self, job_overrides, initial_job_idx)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """One sweep job, on its node."""
        from cnnlab import slurm
        from cnnlab.console import filter_known_warnings

        filter_known_warnings()
        slurm.quiet_job_signals()
        return super().__call__(*args, **kwargs)
