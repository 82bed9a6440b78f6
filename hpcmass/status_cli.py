"""``hpcmass status``: per-stage progress read from the store alone."""

from __future__ import annotations

import json

from .store import status

HELP = "print per-stage progress (done/total units) from the store"


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def format_status(report: dict) -> str:
    lines = [f"store: {report['store']}" + ("" if report["exists"] else " (not created yet)")]
    for stage, s in report["stages"].items():
        if s is None:
            lines.append(f"  {stage:<10} not started")
            continue
        mark = "complete" if s["done"] == s["total"] else "partial"
        failed = f", {s['failed']} failed" if s["failed"] else ""
        lines.append(f"  {stage:<10} {s['done']:>5}/{s['total']:<5} {s['unit']}s  {mark}{failed}"
                     f"  (last run {s['last_run_utc']} on {s['last_run_ranks']} rank(s))")
    return "\n".join(lines)


def run(args, params, comm) -> int:
    if comm.Get_rank() != 0:
        return 0
    report = status(args.workdir)
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0
