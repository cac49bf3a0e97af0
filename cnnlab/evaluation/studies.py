"""The five studies' record (``studies.yaml`` beside this module) at run time: which study row a run
reproduces, what the study reported for it, and how far the run is from it.

A run's study row comes from its experiment and the values its config holds for the keys the row sets
(``compare`` entries of the record: ``activation=gelu`` on S0, S1's ``freeze.trainable``, S3's (alpha, beta)
pairs). A run that sets a key the study varied to a value it never ran has no row; any other override that
changes a setting the study states (or leaves to its framework) is named as a departure from the study.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

RECORD_PATH = Path(__file__).with_name("studies.yaml")
FIDELITY_PAGE = "docs/fidelity.md"
STATUS_LABELS = {
    "stated": "as stated",
    "framework": "{framework} default / meaning",
    "silent": "our choice",
    "ambiguous": "our reading",
    "differs": "differs",
}
METRIC_NAMES = {"test/acc": "test accuracy", "val/acc_best": "best validation accuracy"}
# a deviation's reason, shortened to about two lines of a terminal
REASON_CHARS = 160


@lru_cache(maxsize=1)
def load_record(path: Path = RECORD_PATH) -> dict[str, Any]:
    """The installed record: ``datasets`` and ``studies`` (see the file's header)."""
    return yaml.safe_load(path.read_text())


def resolved_runs(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each run with its parent's settings merged in: an entry replaces the parent's entry of the same name,
    ``drop`` removes inherited ones. Every entry carries ``origin``, the run that defines it."""
    runs: dict[str, dict[str, Any]] = {}

    def resolve(run_id: str) -> dict[str, Any]:
        if run_id not in runs:
            run = study["runs"][run_id]
            own = {entry["setting"]: {**entry, "origin": run_id} for entry in run.get("settings", [])}
            inherited = resolve(run["inherits"])["settings"] if run.get("inherits") else []
            # an own entry takes the place of the inherited one it replaces; new ones go last
            settings = [own.pop(e["setting"], e) for e in inherited if e["setting"] not in run.get("drop", [])]
            runs[run_id] = {**run, "settings": settings + list(own.values())}
        return runs[run_id]

    for run_id in study["runs"]:
        resolve(run_id)
    return {run_id: runs[run_id] for run_id in study["runs"]}


def status_label(status: str, framework: str) -> str:
    """A setting's status as the fidelity tables word it (``framework`` -> ``Keras default / meaning``)."""
    return STATUS_LABELS[status].format(framework=framework)


def same(actual: Any, expected: Any) -> bool:
    """Equal, floats to 1e-9 relative; a dict matches when it holds every expected key with an equal value."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(k in actual and same(actual[k], v) for k, v in expected.items())
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    if isinstance(expected, bool) or isinstance(actual, bool) or expected is None or actual is None:
        return actual is expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-15)
    return actual == expected


def _as_number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _holds(actual: Any, wanted: Any) -> bool:
    """A config value against a row's value, as a user would type either (``1e-3`` is ``0.001``)."""
    return same(_as_number(actual), _as_number(wanted))


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _covers(choose_key: str, config_key: str) -> bool:
    """Whether a row's key (``optim``) decides a config key (``optim._target_``)."""
    return config_key == choose_key or config_key.startswith(choose_key + ".")


def _value_of(key: str, config: DictConfig, choices: dict[str, Any]) -> Any:
    """A group's chosen option (``activation`` -> ``gelu``) or a config value (``optim.lr``)."""
    if key in choices:
        return choices[key]
    return OmegaConf.select(config, key, default=None)


def _checked_keys(entry: dict[str, Any]) -> dict[str, Any]:
    """The config keys a setting fixes that a run's config shows (the optimizer's lr among its computed ones)."""
    keys = {k: v for k, v in (entry.get("config") or {}).items() if not k.startswith("hydra.")}
    optimizer = (entry.get("computed") or {}).get("optimizer")
    if isinstance(optimizer, dict) and "lr" in optimizer:
        keys["optim.lr"] = optimizer["lr"]
    return keys


def _shorten(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3].rsplit(" ", 1)[0] + "..."


def _shown(value: Any) -> str:
    """A value as a user writes it on the command line (``false``, ``null``, ``[0.6, 0.2, 0.2]``)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _record_run(study: dict[str, Any], row: dict[str, Any]) -> str:
    """The record's run of a row: the one composed from the experiment and the row's overrides, else the
    experiment's own."""
    wanted = {f"experiment={row['experiment']}", *(f"{k}={v}" for k, v in row["choose"].items())}
    runs = study["runs"]
    wanted = {_normal(o) for o in wanted}
    by_compose = [rid for rid, run in runs.items() if {_normal(o) for o in run["compose"]} == wanted]
    own = [rid for rid, run in runs.items() if run["compose"] == [f"experiment={row['experiment']}"]]
    return (by_compose or own)[0]


def _normal(override: str) -> str:
    """``+grid=x`` as ``grid=x``, ``optim.lr=1e-3`` as ``optim.lr=0.001``: overrides compared by meaning."""
    key, _, value = override.partition("=")
    return f"{key.lstrip('+~')}={_as_number(value)}"


def _decided(row: dict[str, Any], settings: list[dict[str, Any]]) -> set[str]:
    """The config keys a row sets, and those the search it runs samples (a trial's ``optim.lr=...``)."""
    keys = {k.lstrip("+") for k in row["choose"]}
    return keys | {k for e in settings for k in ((e.get("computed") or {}).get("search_space") or {})}


def match_study(overrides: list[str], choices: dict[str, Any], config: DictConfig) -> dict[str, Any] | None:
    """The study row a run reproduces, from its command-line ``overrides``, Hydra's group ``choices`` and
    its composed ``config``: None when its experiment belongs to no study, ``row: None`` (and why) when the
    study never ran what the overrides set."""
    experiment = choices.get("experiment")
    record = load_record()
    study_id = next(
        (sid for sid, s in record["studies"].items() if any(r["experiment"] == experiment for r in s["compare"])), None
    )
    if study_id is None:
        return None
    study = record["studies"][study_id]
    rows = [r for r in study["compare"] if r["experiment"] == experiment]
    explicit = {_key(o) for o in overrides if "=" in o}
    varied = {k.lstrip("+") for r in rows for k in r["choose"]}
    candidates = [
        r for r in rows if all(_holds(_value_of(k.lstrip("+"), config, choices), v) for k, v in r["choose"].items())
    ]
    runs = resolved_runs(study)
    decided = {id(r): _decided(r, runs[_record_run(study, r)]["settings"]) for r in candidates}

    def unrun(row: dict[str, Any]) -> list[str]:
        """Keys the command set to values the study varied, which this row does not decide."""
        return sorted((explicit & varied) - decided[id(row)])

    # the row whose keys the command set itself: `optim.lr=1e-4` is S1-lr's point, the bare experiment S1's own
    candidates.sort(key=lambda r: (len(unrun(r)), -len(explicit & decided[id(r)])))
    base = {"study": study_id, "title": study["title"], "experiment": experiment, "fidelity": FIDELITY_PAGE}
    chosen = candidates[0] if candidates else None
    if chosen is None or unrun(chosen):
        keys = unrun(chosen) if chosen else sorted(explicit & varied)
        shown = ", ".join(f"{k}={_plain(_value_of(k, config, choices))}" for k in keys) or "these overrides"
        return {**base, "row": None, "reason": f"{study_id} ran no {shown}"}
    run_id = _record_run(study, chosen)
    settings = runs[run_id]["settings"]
    departures = []
    for entry in settings:
        keys = _checked_keys(entry) if entry["status"] in ("stated", "framework") else {}
        if any(_covers(c, k) for c in decided[id(chosen)] for k in keys):
            continue
        for key, wanted in keys.items():
            actual = _plain(OmegaConf.select(config, key, default=None))
            if not _holds(actual, wanted):
                departures.append(
                    f"{key}={_shown(actual)} (the study: {_shown(wanted)}; {entry['setting']}, "
                    f"{status_label(entry['status'], study['framework'])}, {entry['source']})"
                )
    deviations = [
        f"{entry['setting']} ({status_label(entry['status'], study['framework'])}, {entry['source']}): "
        + _shorten(entry.get("why", ""))
        for entry in settings
        if entry["status"] in ("differs", "ambiguous")
    ]
    reported = chosen["reported"]
    return {
        **base,
        "row": chosen["row"],
        "record_run": run_id,
        "choose": {k: _plain(v) for k, v in chosen["choose"].items()},
        "metric": chosen["metric"],
        "units": "%",
        "reported": None if reported is None else float(reported),
        "reported_text": reported,
        "decimals": len(reported.split(".")[1]) if reported and "." in reported else 0,
        "source": chosen["source"],
        "note": chosen.get("note"),
        "departures": departures,
        "deviations": deviations,
        # where the seed reports the run's results otherwise
        "conflicts": [
            f"{result['metric']}: {' '.join(str(result['conflict']).split())}"
            for result in study["runs"][run_id].get("results") or []
            if result.get("conflict")
        ],
    }


def update_comparison(results: dict[str, Any]) -> None:
    """Fill ``this_run`` and ``difference`` of ``results["study"]`` from the run's metric (percentage points,
    rounded as the study rounds), and for a cross-validated job the standard deviation over folds."""
    study = results.get("study")
    if not study:
        return
    value = results.get(study.get("metric", ""))
    if study.get("reported") is None or not isinstance(value, (int, float)) or math.isnan(value):
        study["comparison"] = comparison_line(study)
        return
    decimals = study["decimals"]
    study["this_run"] = round(100 * value, decimals)
    study["difference"] = round(study["this_run"] - study["reported"], decimals)
    spread = results.get(f"{study['metric']}_std")
    if isinstance(spread, (int, float)):
        study["this_run_std"] = round(100 * spread, decimals + 1)
    study["comparison"] = comparison_line(study)


def study_of_run(config: DictConfig) -> dict[str, Any] | None:
    """:func:`match_study` for the running Hydra job; None for a config composed without Hydra's app (its
    overrides and group choices are unknown)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return match_study(list(hydra_cfg.overrides.task), dict(hydra_cfg.runtime.choices), config)


def percent(value: float, decimals: int) -> str:
    """A percentage as the study writes it: ``95.00`` at two decimals, ``88`` at none."""
    return f"{value:.{decimals}f}"


def signed(value: float, decimals: int) -> str:
    """A difference with its sign: ``+1.25``, ``-3``."""
    return f"{value:+.{decimals}f}"


def comparison_line(study: dict[str, Any]) -> str:
    """``S0-act (S0 sec. 9.1): reported 95.00 % test accuracy, this run 93.10 % (difference -1.90)``."""
    if study.get("row") is None:
        return f"{study['study']}: no study row: {study['reason']}"
    where = f"{study['row']} ({study['source']})"
    if study.get("reported") is None:
        return f"{where}: the study reports no number for this run" + (f" ({study['note']})" if study["note"] else "")
    metric = METRIC_NAMES.get(study["metric"], study["metric"])
    text = f"{where}: reported {study['reported_text']} % {metric}"
    if "this_run" in study:
        decimals = study["decimals"]
        spread = f" ± {study['this_run_std']}" if "this_run_std" in study else ""
        text += (
            f", this run {percent(study['this_run'], decimals)}{spread} % "
            f"(difference {signed(study['difference'], decimals)})"
        )
    else:
        text += f", this run has no {study['metric']}"
    return text


def fidelity_link() -> str:
    """The fidelity page: its file in a source checkout (an editable install), else its repository path."""
    page = Path(__file__).resolve().parents[2] / FIDELITY_PAGE
    return page.as_uri() if page.is_file() else FIDELITY_PAGE


def report_section(study: dict[str, Any] | None, link: str) -> list[str]:
    """report.md's "Compared with the study" lines; ``link`` is the fidelity page as the report reaches it."""
    if not study:
        return []
    lines = ["## Compared with the study", "", f"{study['title']}.", "", comparison_line(study) + "."]
    if study.get("note"):
        lines += ["", f"Note: {study['note']}."]
    if study.get("conflicts"):
        lines += ["", "The seed reports it otherwise too:", ""]
        lines += [f"- {c}" for c in study["conflicts"]]
    if study.get("departures"):
        lines += ["", "Departures from the study (this run's config):", ""]
        lines += [f"- {d}" for d in study["departures"]]
    if study.get("deviations"):
        lines += ["", "Recorded deviations of this experiment:", ""]
        lines += [f"- {d}" for d in study["deviations"]]
    lines += [
        "",
        f"Every setting and its source: [{FIDELITY_PAGE}]({link}), or `cnnlab-studies --study {study['study']}`.",
    ]
    return lines + [""]


def tracker_fields(study: dict[str, Any] | None) -> dict[str, Any]:
    """What a run's trackers record of its study (W&B config, MLflow params and tags, TensorBoard hparams):
    the study id, row, metric and reported value; nothing for a run of no study."""
    if not study:
        return {}
    return {
        "id": study["study"],
        "row": study.get("row"),
        "metric": study.get("metric"),
        "reported": study.get("reported"),
    }
