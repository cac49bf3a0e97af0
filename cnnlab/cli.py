"""The ``cnnlab`` command: compose the config with Hydra and train."""

from __future__ import annotations

import logging
import math
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnnlab.errors import CnnlabError
from cnnlab.training.distributed import pin_run_dir

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="pkg://cnnlab.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train one run; return the configured ``optimized_metric`` for sweepers.

    In a multirun a failed job returns None instead of raising, so the sweep goes on; its results.json
    records the error and the sweep summary lists it. None, not NaN, for failed jobs and missing or NaN
    metrics: the Optuna sweeper records None as a failed trial and goes on, while a NaN makes its error
    path raise and end the whole study (hydra-optuna-sweeper 1.2 with optuna 2.10).
    """
    from cnnlab.cross_validation import cross_validate  # torch and Lightning: only after --help and --cfg
    from cnnlab.train import train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    pin_run_dir()  # a DDP launcher's re-run of this job writes to this job's output dir
    try:
        results = cross_validate(cfg) if cfg.get("cross_validate") else train(cfg)
    except CnnlabError as error:
        if not multirun:
            sys.exit(f"cnnlab: error: {error}")
        log.error("Job failed, the sweep goes on: %s", error)
        return None
    except Exception:
        if not multirun:
            raise
        log.exception("Job failed; the sweep goes on")
        return None
    value = results.get(cfg.get("optimized_metric"))
    return None if value is None or math.isnan(value) else float(value)


if __name__ == "__main__":
    main()
