"""The ``cnnlab-studies`` command: the five studies cnnlab reproduces, from the installed record: each README
row's command, the numbers the study reported, and how faithful the runs are (``--study S1`` for one, with
its recorded deviations). ``--write-docs ROOT`` regenerates docs/fidelity.md and README's fidelity section."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from cnnlab.evaluation.fidelity import tally, write_docs
from cnnlab.evaluation.studies import FIDELITY_PAGE, load_record, resolved_runs, status_label


def _values(values: list[Any]) -> str:
    return ",".join("null" if v is None else str(v) for v in values)


def command(row: dict[str, Any]) -> str:
    """The README row's command: its experiments and sweep values, a multirun when it runs more than one job."""
    args = [f"experiment={','.join(row['experiments'])}"]
    args += [f"{key}={_values(values)}" for key, values in (row.get("sweep") or {}).items()]
    multirun = len(row["experiments"]) > 1 or bool(row.get("sweep"))
    return shlex.join(["cnnlab", *(["-m"] if multirun else []), *args])


def describe(study_id: str, study: dict[str, Any], detailed: bool) -> str:
    """A study's rows (command and reported numbers), its fidelity tally and, ``detailed``, its deviations."""
    lines = [f"{study_id}  {study['title']}", f"    seed {study['seed']}; settings: {tally(study)}"]
    for row_id, row in study["readme_rows"].items():
        numbers = [
            f"{' '.join(f'{k}={v}' for k, v in c['choose'].items()) or c['experiment']}: {c['reported']} %"
            for c in study["compare"]
            if c["row"] == row_id and c["reported"] is not None
        ]
        lines += [f"  {row_id}", f"    {command(row)}", f"    reported: {'; '.join(numbers) or 'no number'}"]
    if detailed:
        seen = set()
        lines.append("  deviations (differs, our reading):")
        for run_id, run in resolved_runs(study).items():
            for entry in run["settings"]:
                key = (entry["setting"], entry["origin"])
                if entry["status"] in ("differs", "ambiguous") and key not in seen:
                    seen.add(key)
                    why = " ".join(str(entry.get("why", "")).split())
                    label = status_label(entry["status"], study["framework"])
                    lines.append(f"    {entry['origin']} | {entry['setting']} ({label}, {entry['source']}): {why}")
    lines.append(f"    every setting: {FIDELITY_PAGE}#{study_id.lower()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cnnlab-studies", description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", help="one study (S0..S4), with its recorded deviations")
    parser.add_argument(
        "--write-docs", type=Path, metavar="ROOT", help="regenerate docs/fidelity.md and README's fidelity section"
    )
    args = parser.parse_args(argv)
    record = load_record()
    if args.write_docs:
        for path in write_docs(record, args.write_docs):
            print(f"wrote {path}")
        return
    studies = record["studies"]
    if args.study:
        wanted = args.study.upper()
        if wanted not in studies:
            parser.error(f"no study {args.study!r}: one of {', '.join(studies)}")
        print(describe(wanted, studies[wanted], detailed=True))
        return
    print("\n\n".join(describe(study_id, study, detailed=False) for study_id, study in studies.items()))


if __name__ == "__main__":
    main()
