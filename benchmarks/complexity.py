"""The README's complexity table: parameters, multiply-adds, latency and peak memory for a 1280x720 output.

Rows: the presets SeemoRe T/B/L and the paper's MMA (19.8M at x2) at x2/x3/x4, built without weights, then
every shipped model. Everything is :func:`sisr.analysis.profile.profile_model` (what ``sisr profile``
runs), on this machine's CPU; see that module for the conventions. Networks whose multiply-adds (scan
included) exceed ``--max-timed-gmacs`` are counted but not timed: on two CPU cores, the paper's MMA at x2
would take minutes per run.

(Named complexity.py, not profile.py: a script named profile.py would shadow the standard library's
``profile`` module, which cProfile imports.)

Usage: python benchmarks/complexity.py [--repeats N] [--max-timed-gmacs G] [--markdown PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from sisr.analysis.profile import DEFAULT_OUTPUT_SIZE, format_table, machine, profile_model
from sisr.atomic import atomic_write
from sisr.checkpoint import shipped_models
from sisr.cli.argtypes import positive_int

PRESETS = ("seemore-t", "seemore-b", "seemore-l", "mma")
SCALES = (2, 3, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs after one warm-up")
    parser.add_argument(
        "--max-timed-gmacs",
        type=float,
        default=600.0,
        help="time only networks with at most this many GMACs, scan included (default: %(default)s)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write the rows here as JSON")
    args = parser.parse_args()

    jobs = [(name, scale) for name in PRESETS for scale in SCALES]
    jobs += [(name, None) for name in shipped_models()]
    rows = []
    for name, scale in jobs:
        print(f"{name}{'' if scale is None else f' x{scale}'} ...", file=sys.stderr, flush=True)
        rows.append(
            profile_model(
                name,
                scale=scale,
                output_size=DEFAULT_OUTPUT_SIZE,
                repeats=args.repeats,
                max_timed_macs=int(args.max_timed_gmacs * 1e9),
            )
        )
    table = format_table(rows, repeats=args.repeats)
    print(table)
    if args.markdown:
        atomic_write(args.markdown, lambda tmp: Path(tmp).write_text(table, encoding="utf-8"))
    if args.json:
        report = {"machine": machine(), "models": [asdict(p) for p in rows]}
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))


if __name__ == "__main__":
    main()
