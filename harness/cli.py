"""``archbench`` command line: parses arguments and calls named steps; owns the terminal."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.configs import ConfigError
from harness.plugins import PluginError
from harness.registry import RegistryError
from harness.suite import SuiteError

USER_ERRORS = (SuiteError, ConfigError, PluginError, RegistryError)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archbench", description=__doc__)
    p.add_argument("--db", help="database URL or SQLite path (default: $ARCHBENCH_DB or "
                   "results/archbench.db)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="load a user variant or task file (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list registered architectures or tasks")
    ls.add_argument("what", choices=["architectures", "tasks", "suites"])
    ls.add_argument("--json", action="store_true")

    rn = sub.add_parser("run", help="run a suite; re-running resumes")
    rn.add_argument("--suite", required=True, help="shipped suite name or path to YAML")
    rn.add_argument("--device", help="override the suite's device (cpu, cuda, cuda:N)")
    rn.add_argument("--dtype", help="override the suite's dtype")
    rn.add_argument("--threads", type=int, help="override the suite's thread count")
    rn.add_argument("--timeout", type=float, help="override the per-cell timeout (s)")
    rn.add_argument("--no-progress", action="store_true", help="plain log lines, no bar")
    rn.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="run N accuracy cells at once (efficiency cells always run alone); "
                    "give each cores/N threads with --threads")
    rn.add_argument("--checkpoints", metavar="DIR", help="where trained models are saved "
                    "(default: $ARCHBENCH_CHECKPOINTS or results/checkpoints)")
    rn.add_argument("--dry-run", action="store_true",
                    help="print the plan (cells, warnings, ETA) and run nothing")

    pl = sub.add_parser("plan", help="print a suite's cells, warnings and an ETA; runs nothing")
    pl.add_argument("--suite", required=True, help="shipped suite name or path to YAML")
    pl.add_argument("--device", help="override the suite's device (cpu, cuda, cuda:N)")
    pl.add_argument("--dtype", help="override the suite's dtype")
    pl.add_argument("--threads", type=int, help="override the suite's thread count")
    pl.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="accuracy cells run N at a time (divides their share of the ETA)")

    st = sub.add_parser("site", help="render the static leaderboard")
    st.add_argument("--out", default="site-out", help="output folder (wiped first)")

    ex = sub.add_parser("export", help="export results")
    ex.add_argument("--format", choices=["csv"], default="csv")
    ex.add_argument("--out", required=True, help="output file")

    sub.add_parser("doctor", help="what meters, devices, threads and database this machine has")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from harness import plugins

        plugins.load_entry_points()  # installed plugins first, then --plugin files
        for path in args.plugin:
            plugins.load(path)
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        print(f"archbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archbench: interrupted", file=sys.stderr)
        return 130


def cmd_list(args: argparse.Namespace) -> int:
    from harness import catalog

    entries = catalog.listing(args.what)
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return 0
    for e in entries:
        print(f"{e['name']:<22} {e.get('family') or e.get('kind') or ''}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness import db, plan, runner, suite
    from harness.progress import Progress

    if args.jobs < 1:
        raise SuiteError(f"--jobs: must be an integer >= 1, got {args.jobs}")
    if args.dry_run:
        return cmd_plan(args)
    s = suite.load(args.suite, device=args.device, dtype=args.dtype, threads=args.threads)
    cells = plan.plan(s)
    for line in plan.warnings(cells):
        print(f"archbench: warning: {line}", file=sys.stderr)
    if args.checkpoints:  # the cell processes inherit it
        os.environ["ARCHBENCH_CHECKPOINTS"] = str(Path(args.checkpoints).resolve())
    engine = db.connect(args.db)
    import tasks

    headlines = {name: tasks.get(name).headline for name in s.tasks}
    with Progress(enabled=not args.no_progress) as progress:
        report = runner.run(
            cells, engine, suite_name=s.name, timeout_s=args.timeout or s.timeout_s,
            plugins=tuple(str(Path(p).resolve()) for p in args.plugin), headlines=headlines,
            on_plan=progress.plan, on_start=progress.start, on_done=progress.done,
            jobs=args.jobs,
        )
    from harness import derive

    derived = derive.refresh(engine, report.code_version)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items())) or "nothing new"
    print(f"run {report.run_id}: {len(cells)} cells, {report.skipped} already done, {counts}; "
          f"{derived} derived figures; hardware {report.fingerprint}, code {report.code_version}; "
          f"database {db.redact(db.resolve_url(args.db))}")
    if report.interrupted:
        print("archbench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """The cells a run would measure (finished ones marked), the plan's warnings and an ETA."""
    from harness import db, plan, suite

    if args.jobs < 1:
        raise SuiteError(f"--jobs: must be an integer >= 1, got {args.jobs}")
    s = suite.load(args.suite, device=args.device, dtype=args.dtype, threads=args.threads)
    cells = plan.plan(s)
    url = db.resolve_url(args.db)
    existing = not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).is_file()
    engine = db.connect(args.db) if existing else None  # a plan never creates a database
    history = db.wall_times(engine) if engine is not None else {}
    done: set[str] = set()
    if engine is not None and cells:  # what `run` would skip: same hardware and code version
        from harness.hardware import fingerprint
        from harness.provenance import code_version

        done = db.done_cells(engine, fingerprint(cells[0].device).fingerprint, code_version())
    todo = [c for c in cells if c.cell_id not in done]
    import tasks

    for c in cells:
        mark = "done" if c.cell_id in done else "todo"
        print(f"{mark}  {c.cell_id}  {c.arch:<18} {c.task:<18} seed {c.seed}")
    for line in plan.warnings(cells):
        print(f"warning: {line}")
    accuracy = [c for c in todo if tasks.get(c.task).kind == "accuracy"]
    rest = [c for c in todo if tasks.get(c.task).kind != "accuracy"]
    acc_s, known_a = plan.estimate(accuracy, history)
    rest_s, known_r = plan.estimate(rest, history)
    eta = acc_s / args.jobs + rest_s
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run; "
          f"ETA ~{eta / 60:.0f} min with --jobs {args.jobs} ({known_a + known_r} of {len(todo)} "
          f"estimates from earlier runs, the rest guessed)")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from harness import db, render

    index = render.build(db.connect(args.db), Path(args.out))
    print(f"site written: {index.resolve().as_uri()}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness import db, export

    n = export.to_csv(db.connect(args.db), Path(args.out))
    print(f"exported {n} rows to {args.out}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness import doctor

    report: dict[str, Any] = doctor.report(args.db)
    for section, rows in report.items():
        print(f"[{section}]")
        for row in rows:
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "plan": cmd_plan, "site": cmd_site,
            "export": cmd_export, "doctor": cmd_doctor}

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
