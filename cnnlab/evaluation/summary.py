"""Sweep summaries: one row per run (swept overrides, status, headline metrics) as CSV, Markdown and a
plot of the optimized metric against the swept parameters.

Written by :class:`SweepSummary` (a Hydra callback) at the end of every multirun, and by
``cnnlab-summarize`` for any set of run or sweep directories.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cnnlab.console import format_metric, print_block, shown_path
from cnnlab.evaluation.studies import FIDELITY_PAGE, percent, signed

# overrides that repeat a configuration rather than change it: the summary averages over them
REPEAT_KEYS = ("seed", "data.fold")
METRIC_COLUMNS = ("test/acc", "test/f1_macro", "val/acc_best")
RUN_COLUMNS = ("epochs", "sec_per_epoch", "params")
DEFAULT_METRIC = "val/acc_best"
# the study each run reproduces (results.json's "study"), in the study's own units and rounding
STUDY_COLUMNS = ("study row", "reported %", "this run %", "difference")


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of a run, from ``.hydra/overrides.yaml``."""
    path = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.exists() else []


def _override_dict(overrides: list[str]) -> dict[str, str]:
    pairs = (o.split("=", 1) for o in overrides if "=" in o)
    return {key.lstrip("+~"): value for key, value in pairs}


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Run dirs (with ``.hydra/`` or ``results.json``, not inside another run dir) at or below each path, in
    natural order."""
    found: set[Path] = set()
    for path in map(Path, paths):
        markers = [*path.rglob(".hydra"), *path.rglob("results.json")]
        found.update(marker.parent for marker in markers)
    # the folds of a cross-validated run (<run>/fold_<k>/) are part of that run's row
    return sorted((d for d in found if not any(parent in found for parent in d.parents)), key=_natural_key)


def is_missing(value: Any) -> bool:
    """None or NaN: a value a run did not produce."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def run_row(run_dir: Path, base: Path) -> dict[str, Any]:
    """One summary row: overrides, status and metrics of a run dir (status ``missing`` without results.json)."""
    path = run_dir / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"status": "missing"}
    error = str(results.get("error", "")).splitlines()
    return {
        "run": os.path.relpath(run_dir, base),
        "overrides": _override_dict(read_overrides(run_dir)),
        "status": results.get("status", "unknown"),
        **{key: _number(value) for key, value in results.items() if "/" in key},
        "epochs": results.get("epochs_run"),
        "sec_per_epoch": _number(results.get("sec_per_epoch")),
        "params": results.get("num_params"),
        "error": error[0][:200] if error else "",
        **study_cells(results.get("study")),
    }


def study_cells(study: dict[str, Any] | None) -> dict[str, Any]:
    """A run's study columns: its row, the study's number, the run's and the difference in percentage
    points, rounded as the study rounds; the reason for a run the study never ran."""
    if not study:
        return {"study": None}
    cells: dict[str, Any] = {"study": study, "study row": study.get("row") or f"none: {study.get('reason')}"}
    if study.get("reported") is not None:
        decimals = study["decimals"]
        cells["reported %"] = percent(study["reported"], decimals)
        if study.get("this_run") is not None:
            spread = f" ± {study['this_run_std']}" if study.get("this_run_std") is not None else ""
            cells["this run %"] = percent(study["this_run"], decimals) + spread
            cells["difference"] = signed(study["difference"], decimals)
    return cells


@dataclass
class Summary:
    """Rows sorted by ``metric`` (best first, failed runs last) and the overrides that vary between them."""

    rows: list[dict[str, Any]]
    swept: list[str]
    metric: str

    @property
    def studies(self) -> list[dict[str, Any]]:
        """The study of each run that has one."""
        return [row["study"] for row in self.rows if row.get("study")]

    @property
    def columns(self) -> list[str]:
        metrics = [*METRIC_COLUMNS, *([self.metric] if self.metric not in METRIC_COLUMNS else [])]
        compared = list(STUDY_COLUMNS) if self.studies else []
        return ["run", *self.swept, "status", *compared, *metrics, *RUN_COLUMNS, "error"]

    def table(self) -> list[dict[str, Any]]:
        """One flat dict per row, keyed by :attr:`columns`."""
        return [
            {c: row["overrides"].get(c, "") if c in self.swept else row.get(c) for c in self.columns}
            for row in self.rows
        ]

    @property
    def repeat_keys(self) -> list[str]:
        return [k for k in self.swept if k in REPEAT_KEYS]

    def mean_std(self) -> list[dict[str, Any]]:
        """Completed runs grouped by every swept override except seed/fold: mean ± std of each metric."""
        config_keys = [k for k in self.swept if k not in REPEAT_KEYS]
        groups: dict[tuple, list[dict]] = {}
        for row in self.rows:
            if row["status"] == "completed":
                groups.setdefault(tuple(row["overrides"].get(k, "") for k in config_keys), []).append(row)
        table = []
        for values, rows in groups.items():
            entry: dict[str, Any] = dict(zip(config_keys, values), runs=len(rows))
            for column in [c for c in self.columns if c in (*METRIC_COLUMNS, self.metric, "epochs", "sec_per_epoch")]:
                numbers = [float(r[column]) for r in rows if not is_missing(r.get(column))]
                spread = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
                entry[column] = (statistics.mean(numbers), spread) if numbers else None
            entry.update(_mean_comparison([r.get("study") for r in rows]))
            table.append(entry)
        return table


def _mean_comparison(studies: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The study's number beside the mean ± std of the runs' (the k-fold mean of S1-cv): the same row in
    every run of a group, else nothing."""
    rows = {(s or {}).get("row") for s in studies}
    first = studies[0] or {}
    if len(rows) != 1 or first.get("reported") is None:
        return {}
    decimals = first["decimals"]
    values = [s["this_run"] for s in studies if s.get("this_run") is not None]
    cells = {"study row": first["row"], "reported %": percent(first["reported"], decimals)}
    if values:
        mean = statistics.mean(values)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells["this run %"] = f"{percent(mean, decimals)} ± {percent(spread, decimals + 1)}"
        cells["difference"] = signed(mean - first["reported"], decimals)
    return cells


def summarize(run_dirs: list[Path], base: Path, metric: str | None = None) -> Summary:
    """Summary of ``run_dirs``; ``metric`` defaults to the runs' ``optimized_metric``."""
    rows = [run_row(d, base) for d in run_dirs]
    if metric is None:
        configs = [d / ".hydra" / "config.yaml" for d in run_dirs if (d / ".hydra" / "config.yaml").exists()]
        metric = OmegaConf.load(configs[0]).get("optimized_metric", DEFAULT_METRIC) if configs else DEFAULT_METRIC
    keys = list(dict.fromkeys(k for row in rows for k in row["overrides"]))
    swept = [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1]
    sign = 1 if "loss" in metric else -1

    def order(row: dict) -> tuple:
        value = row.get(metric)
        failed = row["status"] != "completed" or is_missing(value)
        return (failed, 0.0 if failed else sign * value)

    return Summary(sorted(rows, key=order), swept, metric)


def _format(value: Any, column: str = "") -> str:
    if is_missing(value):
        return ""
    if isinstance(value, tuple):
        return f"{_format(value[0], column)} ± {_format(value[1], column)}"
    if column == "params" and isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}" if column in ("sec_per_epoch", "epochs") else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of dicts that share their keys."""
    if not rows:
        return "(no runs)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row[c], c) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_summary(summary: Summary, out_dir: Path) -> str:
    """Write summary.csv, summary.md and summary.png in ``out_dir``; return the Markdown."""
    from cnnlab.evaluation.plots import save, sweep_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary.table()
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=summary.columns)
        writer.writeheader()
        writer.writerows({k: "" if is_missing(v) else v for k, v in row.items()} for row in table)
    statuses = [row["status"] for row in summary.rows]
    markdown = (
        f"# Summary of {len(table)} runs\n\n"
        f"Sorted by `{summary.metric}`; swept: {', '.join(f'`{k}`' for k in summary.swept) or 'nothing'}; "
        f"{statuses.count('completed')} completed, {len(statuses) - statuses.count('completed')} not.\n\n"
        + study_note(summary.studies)
        + markdown_table(table)
    )
    if summary.repeat_keys:
        repeats = ", ".join(f"`{k}`" for k in summary.repeat_keys)
        markdown += f"\n## Mean ± std over {repeats}\n\n" + markdown_table(summary.mean_std())
    plotted = [k for k in summary.swept if k not in REPEAT_KEYS] or summary.swept
    save(
        sweep_figure([{**r["overrides"], **r} for r in summary.rows], plotted, summary.metric), out_dir / "summary.png"
    )
    markdown += "\n![summary](summary.png)\n"
    (out_dir / "summary.md").write_text(markdown)
    return markdown


def study_note(studies: list[dict[str, Any]]) -> str:
    """The line above the table that says which studies its "reported" column comes from."""
    titles = list(dict.fromkeys(s["title"] for s in studies))
    if not titles:
        return ""
    return (
        f"Compared with {'; '.join(titles)}: *reported %* is the study's own number for each run's row "
        f"(its metric, rounded as the study rounds it), *difference* this run minus it in percentage points. "
        f"Departures and deviations: each run's report.md, and {FIDELITY_PAGE}.\n\n"
    )


def sweep_end_block(summary: Summary, sweep_dir: Path) -> str:
    """The block a finished multirun prints: its directory, summary.md, and the best job's overrides and score."""
    completed = sum(row["status"] == "completed" for row in summary.rows)
    lines = [
        f"Sweep finished: {shown_path(sweep_dir)} ({completed} of {len(summary.rows)} jobs completed)",
        f"  summary     {shown_path(sweep_dir / 'summary.md')}",
    ]
    best = summary.rows[0] if summary.rows and summary.rows[0]["status"] == "completed" else None
    if best is not None:
        overrides = " ".join(f"{k}={v}" for k, v in best["overrides"].items()) or "(no overrides)"
        lines.append(
            f"  best        job {best['run']}: {overrides}  {summary.metric} {format_metric(best.get(summary.metric))}"
        )
    return "\n".join(lines)


def mark_lost(run_dir: Path, reason: str) -> None:
    """Record in ``run_dir/results.json`` that its run ended without saying so itself (killed with SIGKILL,
    out of memory, node lost, never started): status ``lost``. A run that recorded its end (completed,
    failed, interrupted) keeps it."""
    path = run_dir / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if results.get("status") not in (None, "running"):
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    results.update(status="lost", error=reason)
    path.write_text(json.dumps(results, indent=2))


class SweepSummary(Callback):
    """Hydra callback: summarize every job of a multirun into its sweep dir (each completed, failed,
    interrupted or lost, with its run dir), and say where it is and which job did best."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        for run_dir in find_run_dirs([sweep_dir]):  # every job has ended: one still "running" was killed
            if (run_dir / "results.json").is_file():
                mark_lost(run_dir, "the job ended before the run finished (killed)")
        summary = summarize(find_run_dirs([sweep_dir]), base=sweep_dir, metric=config.get("optimized_metric"))
        write_summary(summary, sweep_dir)
        print_block(sweep_end_block(summary, sweep_dir))
