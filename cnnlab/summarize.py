"""The ``cnnlab-summarize`` command: one comparison table from any run and sweep directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnlab.evaluation.summary import find_run_dirs, summarize, write_summary


def main(argv: list[str] | None = None) -> None:
    """Summarize every run found under the given directories into summary.{csv,md,png}."""
    parser = argparse.ArgumentParser(prog="cnnlab-summarize", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write (default: the directory if only one, else .)")
    parser.add_argument("--metric", help="metric to sort by (default: the runs' optimized_metric)")
    args = parser.parse_args(argv)
    out = args.out or (args.dirs[0] if len(args.dirs) == 1 else Path("."))
    run_dirs = find_run_dirs(args.dirs)
    if not run_dirs:
        parser.error(f"no run directories (with .hydra/ or results.json) under {', '.join(map(str, args.dirs))}")
    print(write_summary(summarize(run_dirs, base=out, metric=args.metric), out))


if __name__ == "__main__":
    main()
