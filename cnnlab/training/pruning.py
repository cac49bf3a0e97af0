"""Budget-aware search: an Optuna pruner (e.g. Hyperband) stops unpromising multirun trials early.

Hydra's Optuna sweeper runs ask-and-tell: it asks the study for a trial, launches a job with the trial's
parameters as overrides, and tells the study the job's return value. It never hands the ``optuna.Trial``
to the job, so :class:`OptunaPruning` finds it in the study's storage (which must therefore be a database
every job can open, e.g. ``sqlite:///optuna.db``): the RUNNING trial whose parameters are this job's
overrides. Each epoch it reports the monitored metric to that trial (Optuna's intermediate values, what
pruners compare) and asks the pruner, configured here because the sweeper builds its study without one,
whether to stop. A pruned job ends like an early-stopped one: it tests its best checkpoint and returns its
best value so far, so the sweeper records the trial as COMPLETE with the value reached on its smaller
budget; the trial's ``pruned_at_epoch`` user attribute and the run's ``epochs_run`` say that it was cut.
"""

from __future__ import annotations

import logging

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


def find_running_trial(study: optuna.Study, overrides: list[str]) -> optuna.trial.FrozenTrial | None:
    """The study's oldest RUNNING trial whose every parameter appears as ``name=value`` in ``overrides``."""
    given = set(overrides)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if {f"{name}={value}" for name, value in trial.params.items()} <= given:
            return trial
    return None


class OptunaPruning(Callback):
    """Report ``monitor`` after every validation to this job's Optuna trial; stop training when the
    ``pruner`` says so. Does nothing outside an Optuna multirun (single runs, other sweepers)."""

    def __init__(
        self, pruner: optuna.pruners.BasePruner, study_name: str | None, storage: str | None, monitor: str = "val/acc"
    ) -> None:
        self.pruner = pruner
        self.study_name = study_name
        self.storage = storage
        self.monitor = monitor
        self.trial: optuna.trial.Trial | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or not self._in_optuna_sweep():
            return
        study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)
        frozen = find_running_trial(study, list(HydraConfig.get().overrides.task))
        if frozen is None:
            log.warning("No running Optuna trial matches this job's overrides: no pruning")
            return
        self.trial = optuna.trial.Trial(study, frozen._trial_id)
        log.info("Reporting %s to Optuna trial %d of study %r", self.monitor, frozen.number, self.study_name)

    def _in_optuna_sweep(self) -> bool:
        if not self.storage or not HydraConfig.initialized():
            return False
        hydra_cfg = HydraConfig.get()
        return hydra_cfg.mode == RunMode.MULTIRUN and "optuna" in str(hydra_cfg.sweeper.get("_target_", ""))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if self.trial is not None and self.monitor in trainer.callback_metrics:
            epoch = trainer.current_epoch
            self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
            prune = self.trial.should_prune()
            if prune:
                self.trial.set_user_attr("pruned_at_epoch", epoch)
                log.info("Optuna pruned trial %d after epoch %d", self.trial.number, epoch)
        if trainer.strategy.broadcast(prune):
            trainer.should_stop = True
