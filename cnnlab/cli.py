"""The ``cnnlab`` command: compose the config with Hydra and train."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cnnlab.train import train


@hydra.main(version_base="1.3", config_path="pkg://cnnlab.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train one run; return the configured ``optimized_metric`` for sweepers."""
    results = train(cfg)
    value = results.get(cfg.get("optimized_metric"))
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
