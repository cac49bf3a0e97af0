"""The ``cnnlab`` command: compose the config with Hydra, train, and say what came out and where."""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig

from cnnlab.console import filter_known_warnings, print_block, quiet_lightning, run_end_block
from cnnlab.errors import CnnlabError
from cnnlab.extras import missing_extra, missing_plugin
from cnnlab.launchers import register_launchers
from cnnlab.run_dirs import register_resolver
from cnnlab.training.distributed import close_process_group, is_global_zero, pin_run_dir

log = logging.getLogger(__name__)
register_resolver()
register_launchers()


@hydra.main(version_base="1.3", config_path="pkg://cnnlab.conf", config_name="train")
def run(cfg: DictConfig) -> float | None:
    """Train one run; return the configured ``optimized_metric`` for sweepers.

    In a multirun a failed job returns None instead of raising, so the sweep goes on; its results.json
    records the error and the sweep summary lists it. None, not NaN, for failed jobs and missing or NaN
    metrics: the Optuna sweeper records None as a failed trial and goes on, while a NaN makes its error
    path raise and end the whole study (hydra-optuna-sweeper 1.2 with optuna 2.10).
    """
    from cnnlab.training.threads import local_processes, set_intra_op_threads, set_openmp_wait_policy

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    processes = local_processes(parallel_jobs(multirun), cfg.get("trainer"))
    set_openmp_wait_policy(processes)  # before torch loads OpenMP (cnnlab/training/threads.py)
    from cnnlab.cross_validation import cross_validate  # torch and Lightning: only after --help and --cfg
    from cnnlab.train import train

    quiet_lightning()
    set_intra_op_threads(cfg.get("threads"), processes)
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
    if not multirun and is_global_zero():
        print_block(run_end_block(results, Path(cfg.paths.output_dir)))
    value = results.get(cfg.get("optimized_metric"))
    return None if value is None or math.isnan(value) else float(value)


def parallel_jobs(multirun: bool) -> int:
    """Sweep jobs the launcher runs at once on this machine: joblib's ``n_jobs`` (-1: one per core), else 1."""
    launcher = HydraConfig.get().launcher if multirun else {}
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    jobs = launcher.get("n_jobs") or 1
    return jobs if jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + jobs)  # joblib's meaning of negative n_jobs


def main() -> None:
    """The console script: :func:`run`, with a mistake on the command line reported in one line.

    Hydra prints composition errors itself and exits unless HYDRA_FULL_ERROR is set; set here, they reach
    this function, which says what is wrong and what to do. A user's own HYDRA_FULL_ERROR=1 keeps Hydra's."""
    filter_known_warnings()
    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run()
    except (ConfigCompositionException, OverrideParseException) as error:
        if user_setting == "1":
            raise
        sys.exit(f"cnnlab: error: {explain_config_error(error)}")
    except CnnlabError as error:  # a launcher's (hydra/launcher=slurm: sbatch refused, jobs cannot start)
        sys.exit(f"cnnlab: error: {error}")
    except Exception as error:  # a sweeper or launcher plugin importing its optional package
        explanation = missing_extra(error)
        if explanation is None or user_setting == "1":
            raise
        sys.exit(f"cnnlab: error: {explanation}")
    finally:  # main() may be called in a process that goes on (tests)
        close_process_group()
        if user_setting is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_setting


def explain_config_error(error: Exception) -> str:
    """A Hydra composition error as what to change: a mistyped key with the closest valid keys, an
    unknown option with the closest ones, a missing plugin with its pip extra; else Hydra's message."""
    cause = error.__cause__
    message = str(error)
    parent = getattr(cause, "parent_node", None)
    if cause is not None and "not in struct" in str(cause) and parent is not None:
        key, full_key = str(cause.key), str(cause.full_key)
        prefix = full_key[: -len(key)]
        valid = [str(k) for k in parent.keys() if not str(k).startswith("_")]
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(prefix + k for k in close)}?"
            if close
            else f"valid keys: {', '.join(prefix + k for k in valid)}"
        )
        return f"{full_key} is not a config key: {hint} (a leading + adds a new key: +{full_key}=...)"
    plugin = missing_plugin(message)
    if plugin is not None:
        return plugin
    unknown = re.search(r"Could not find '(.+)/([^'/]+)'", message)
    options = re.findall(r"^\t(\S+)$", message.split("Config search path:")[0], flags=re.MULTILINE)
    if unknown and options:
        group, name = unknown.groups()
        close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return f"{group}={name} is not an option of {group}: {hint}(options: {', '.join(options)})"
    return message + (f"\n{cause}" if cause is not None else "")


if __name__ == "__main__":
    main()
