"""The ``cnnlab`` command: compose the config with Hydra and train."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnnlab.errors import CnnlabError
from cnnlab.train import train

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="pkg://cnnlab.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train one run; return the configured ``optimized_metric`` for sweepers.

    In a multirun a failed job returns NaN instead of raising, so the sweep goes on; its results.json
    records the error and the sweep summary lists it.
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = train(cfg)
    except CnnlabError as error:
        if not multirun:
            sys.exit(f"cnnlab: error: {error}")
        log.error("Job failed, the sweep goes on: %s", error)
        return float("nan")
    except Exception:
        if not multirun:
            raise
        log.exception("Job failed; the sweep goes on")
        return float("nan")
    value = results.get(cfg.get("optimized_metric"))
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
