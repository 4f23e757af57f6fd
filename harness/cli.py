"""``archbench`` command line: parses arguments, calls :mod:`harness.api` and owns the terminal.

Exit codes: 0 success; 1 ``run`` finished but some cell did not end ``ok``, ``unavailable`` or
``unsupported`` (``--allow-failures`` keeps 0); 2 bad input (one line naming the file or flag,
the field and what is allowed); 130 interrupted (run the same command again to resume).

Only ``run``, ``plan``, ``nightly`` and ``list architectures|tasks`` load the registries (and so
torch and any plugins, on first use); ``list suites``, ``site``, ``export`` and ``doctor``'s
database check never do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from architectures.configs import ConfigError
from architectures.registry import RegistryError
from harness import (
    api,
    catalog,
    claims,
    compare,
    db,
    dburl,
    executors,
    nightly,
    outputs,
    plugins,
    results,
    runner,
    suite,
)
from harness.progress import Progress

# every error that is the user's input, not a bug: one line, exit 2
USER_ERRORS: tuple[type[Exception], ...] = (
    suite.SuiteError, ConfigError, plugins.PluginError, RegistryError, dburl.DbUrlError,
    outputs.OutputError, db.SchemaError, nightly.NightlyError, compare.CompareError,
    claims.ClaimError, executors.ExecutorError)
MAX_TIMEOUT_S = 7 * 24 * 3600.0
NEEDS_REGISTRY = {"run", "plan", "nightly"}
RERUN = runner.RERUN


class UsageError(ValueError):
    """A flag with a value it cannot take; the message is one line."""


def is_user_error(err: BaseException) -> bool:
    if isinstance(err, UsageError):
        return True
    return isinstance(err, USER_ERRORS)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archbench", description=__doc__)
    p.add_argument("--db", help="database URL or SQLite path (default: $ARCHBENCH_DB or "
                   "results/archbench.db)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="load a user variant or task file (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)
    _run_parsers(sub)
    _data_parsers(sub)
    _report_parsers(sub)
    return p


def _setting_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--suite", required=True, help="shipped suite name or path to YAML")
    sp.add_argument("--device", help="override the suite's device (cpu, cuda, cuda:N)")
    sp.add_argument("--dtype", help="override the suite's dtype")
    sp.add_argument("--threads", type=int, help="override the suite's thread count")


def _run_parsers(sub: Any) -> None:
    ls = sub.add_parser("list", help="list registered architectures or tasks")
    ls.add_argument("what", choices=["architectures", "tasks", "suites"])
    ls.add_argument("--json", action="store_true")

    rn = sub.add_parser("run", help="run a suite; re-running resumes")
    _setting_flags(rn)
    rn.add_argument("--timeout", type=float, help="override the per-cell timeout (s)")
    rn.add_argument("--no-progress", action="store_true", help="plain log lines, no bar")
    rn.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="run N accuracy cells at once (efficiency cells always run alone); "
                    "give each cores/N threads with --threads")
    rn.add_argument("--checkpoints", metavar="DIR", help="where trained models are saved "
                    "(default: $ARCHBENCH_CHECKPOINTS or results/checkpoints)")
    rn.add_argument("--dry-run", action="store_true",
                    help="print the plan (cells, warnings, ETA) and run nothing")
    rn.add_argument("--allow-failures", action="store_true",
                    help="exit 0 even when some cells failed, timed out, ran out of memory, "
                    "diverged or were killed (default: exit 1)")
    rn.add_argument("--rerun", choices=RERUN, default="changed",
                    help="changed (default): measure cells whose variant's or task's source "
                    "changed and cells never measured; none: skip any setting measured by any "
                    "code version; all: measure every cell again")
    rn.add_argument("--memory-limit", metavar="SIZE",
                    help="address-space cap of each CPU cell, e.g. 4GiB or 512MiB (default: "
                    "the suite's memory_limit, else 80%% of RAM over --jobs)")
    executors.add_flags(rn)

    pl = sub.add_parser("plan", help="print a suite's cells, warnings and an ETA; runs nothing")
    _setting_flags(pl)
    pl.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="accuracy cells run N at a time (divides their share of the ETA)")
    pl.add_argument("--rerun", choices=RERUN, default="changed",
                    help="what a run would measure again (as for run)")


def _data_parsers(sub: Any) -> None:
    dbp = sub.add_parser("db", help="database schema: status, or upgrade with the migrations")
    dbp.add_argument("action", choices=["upgrade", "status"])

    st = sub.add_parser("site", help="render the static leaderboard")
    st.add_argument("--out", default="site-out", help="output folder (wiped first)")

    ex = sub.add_parser("export", help="export results (csv, parquet, jsonl, sqlite, sql)")
    ex.add_argument("--format", choices=["csv", "parquet", "jsonl", "sqlite", "sql"],
                    default="csv")
    ex.add_argument("--out", required=True, help="output file")
    ex.add_argument("--suite", action="append", help="only results of runs of this suite "
                    "(repeatable)")
    ex.add_argument("--task", action="append", help="only this task (repeatable)")
    ex.add_argument("--arch", action="append", help="only this architecture (repeatable)")
    ex.add_argument("--status", action="append", help="only this status (repeatable)")
    ex.add_argument("--since", help="only results created at or after this ISO date/time "
                    "(UTC without an offset)")

    mg = sub.add_parser("merge", help="combine databases from several machines, without "
                        "duplicates")
    mg.add_argument("sources", nargs="+", metavar="SRC", help="database URLs or SQLite paths")
    mg.add_argument("--into", required=True, metavar="DST",
                    help="destination database URL or path")


def _report_parsers(sub: Any) -> None:
    nt = sub.add_parser("nightly", help="run the nightly suites, detect regressions against "
                        "history, write a report and publish the site (exit 0 clean, 1 "
                        "confirmed regression, 2 error)")
    nt.add_argument("--config", required=True, metavar="FILE.yaml",
                    help="nightly config (see examples/nightly/nightly.yaml)")
    executors.add_flags(nt)

    cp = sub.add_parser("compare", help="compare two runs, code versions or databases")
    cp.add_argument("a", metavar="A", help="run id, code version (git:...) or database")
    cp.add_argument("b", metavar="B", help="run id, code version (git:...) or database")
    cp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cp.add_argument("--task", action="append", help="only this task (repeatable)")
    cp.add_argument("--metric", action="append", help="only this metric (repeatable)")

    cl = sub.add_parser("claims", help="check the shipped seed-paper claims against the "
                        "database: reproduced, not reproduced or not run, with evidence")
    cl.add_argument("--file", metavar="CLAIMS.yaml", help="claims file (default: the shipped "
                    "harness/claims.yaml)")
    cl.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sub.add_parser("doctor", help="what meters, devices, threads and database this machine has")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as `interrupted`, like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    previous = signal.getsignal(signal.SIGTERM)
    if args.command in ("run", "nightly"):
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command in NEEDS_REGISTRY or getattr(args, "what", "") in ("architectures",
                                                                          "tasks"):
            api.load_plugins(args.plugin)  # installed plugins first, then --plugin files
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("archbench: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not is_user_error(err):
            raise
        text = " ".join(str(err).split())
        print(f"archbench: error: {text}", file=sys.stderr)
        return 2
    finally:
        if args.command in ("run", "nightly"):
            signal.signal(signal.SIGTERM, previous)


def db_url(args: argparse.Namespace) -> str:
    """The checked database URL: malformed, unsupported or in-memory ones are refused here,
    before any work (an in-memory database would discard every result)."""
    return dburl.resolve(args.db)  # flag, then $ARCHBENCH_DB, then the default; checked


def _check_run_flags(args: argparse.Namespace) -> None:
    if args.jobs < 1:
        raise UsageError(f"--jobs: must be an integer >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads: must be an integer >= 1, got {args.threads}")
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_S):
        raise UsageError(f"--timeout: must be seconds in (0, {MAX_TIMEOUT_S:g}], got {timeout}")


def parse_size(text: str, where: str) -> int:
    """``4GiB``, ``512MiB``, ``2G``, ``1e9`` -> bytes; one-line error otherwise."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
             "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
             "tib": 2**40}
    raw = str(text).strip().lower().replace(" ", "")
    number = raw.rstrip("kmgtib")
    unit = raw[len(number):]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise UsageError(f"{where}: expected a size such as 4GiB, 512MiB or bytes, got "
                         f"{text!r}") from None
    if not math.isfinite(value) or value < 2**26:
        raise UsageError(f"{where}: must be at least 64MiB, got {text!r}")
    return int(value)


def cmd_list(args: argparse.Namespace) -> int:
    entries = catalog.listing(args.what)
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return 0
    for e in entries:
        print(f"{e['name']:<22} {e.get('family') or e.get('kind') or ''}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _check_run_flags(args)
    if args.dry_run:
        return cmd_plan(args)
    url = db_url(args)
    memory_limit = parse_size(args.memory_limit, "--memory-limit") if args.memory_limit else None

    def warn(lines: list[str]) -> None:
        for line in lines:
            print(f"archbench: warning: {line}", file=sys.stderr)

    with Progress(enabled=not args.no_progress) as progress:
        summary = api.run_suite(
            args.suite, db_url=url, device=args.device, dtype=args.dtype, threads=args.threads,
            timeout_s=args.timeout, jobs=args.jobs, memory_limit=memory_limit,
            rerun=args.rerun, plugin_paths=args.plugin, checkpoints=args.checkpoints,
            on_plan=progress.plan, on_start=progress.start, on_done=progress.done,
            on_warnings=warn, executor=args.executor, address=args.address)
    return _report_run(args, summary)


def _report_run(args: argparse.Namespace, summary: api.RunSummary) -> int:
    report = summary.report
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items())) or "nothing new"
    elsewhere = (f", {report.elsewhere} held or finished by another runner"
                 if report.elsewhere else "")
    print(f"run {report.run_id}: {len(summary.cells)} cells, {report.skipped} already done, "
          f"{counts}{elsewhere}; {summary.derived} derived figures; hardware "
          f"{report.fingerprint}, code {report.code_version}; database "
          f"{dburl.redact(summary.url)}")
    if report.abandoned_runs:
        print(f"archbench: {report.abandoned_runs} earlier run(s) had died and were marked "
              "abandoned; their unfinished cells were run again", file=sys.stderr)
    if report.interrupted:
        print("archbench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if report.failures and not args.allow_failures:
        bad = ", ".join(f"{o.cell.label} {o.status}" for o in report.failures[:5])
        more = f" and {len(report.failures) - 5} more" if len(report.failures) > 5 else ""
        print(f"archbench: {len(report.failures)} cell(s) did not finish ok: {bad}{more}; "
              "exit 1 (--allow-failures to exit 0)", file=sys.stderr)
        return 1
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """The cells a run would measure (finished ones marked), the plan's warnings and an ETA."""
    _check_run_flags(args)
    planned = api.plan_suite(args.suite, db_url=db_url(args), device=args.device,
                             dtype=args.dtype, threads=args.threads, jobs=args.jobs,
                             rerun=args.rerun)
    waiting = {c.cell_id for c in planned.todo}
    for c in planned.cells:
        mark = "todo" if c.cell_id in waiting else "done"
        print(f"{mark}  {c.cell_id}  {c.arch:<18} {c.task:<18} seed {c.seed}")
    for line in planned.warnings:
        print(f"warning: {line}")
    n, todo = len(planned.cells), len(planned.todo)
    print(f"{n} cells, {n - todo} already done, {todo} to run; ETA ~{planned.eta_s / 60:.0f} "
          f"min with --jobs {args.jobs} ({planned.known} of {todo} estimates from earlier "
          "runs, the rest guessed)")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    index = api.build_site(Path(args.out), db_url=db_url(args))
    print(f"site written: {index.resolve().as_uri()}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    url = db_url(args)
    if args.since:
        try:
            results.parse_since(args.since)
        except ValueError as err:
            raise UsageError(f"--since: {' '.join(str(err).split())}") from None
    n = api.export_results(Path(args.out), args.format, db_url=url, suite=args.suite,
                           task=args.task, arch=args.arch, status=args.status,
                           since=args.since)
    print(f"exported {n} rows to {args.out}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    counts = api.merge_databases(args.sources, args.into)
    print(f"merged into {dburl.redact(dburl.resolve(args.into))}: {counts['results_added']} "
          f"results added, {counts['results_skipped']} already present; "
          f"{counts['runs_added']} runs, {counts['hardware_added']} machines added")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    url = db_url(args)
    if args.action == "status":
        db.connect(url)  # raises the one-line SchemaError for an older or newer database
        print(f"{dburl.redact(url)}: schema {db.SCHEMA_VERSION} (current)")
        return 0
    before, after = api.upgrade_db(url)
    if before is None:
        print(f"{dburl.redact(url)}: created at schema {after}")
    elif before == after:
        print(f"{dburl.redact(url)}: schema {after}, already current")
    else:
        print(f"{dburl.redact(url)}: upgraded from schema {before} to {after}")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    report = api.run_nightly(args.config, db_url=db_url(args), plugin_paths=args.plugin,
                             executor=args.executor, address=args.address)
    for change in report.changes:
        print(f"{change['change']}{'' if change['confirmed'] else ' (unconfirmed)'}: "
              f"{change['arch']} x {change['task']} {change['metric']} "
              f"{(change['rel_change'] or 0) * 100:+.1f}% (p={change['p_value']:.2g})")
    for error in report.errors:
        print(f"archbench: nightly error: {error}", file=sys.stderr)
    return report.exit_code


def cmd_compare(args: argparse.Namespace) -> int:
    url = db_url(args)
    table = api.compare_runs(args.a, args.b, db_url=url, task_names=args.task,
                             metrics=args.metric)
    print(json.dumps(table, indent=2, sort_keys=True, default=str) if args.json
          else compare.render(table))
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    verdicts = api.check_claims(db_url=db_url(args), file=args.file)  # bad file: exit 2
    if args.json:
        print(json.dumps([{"id": v.claim.id, "machine": v.machine, "status": v.status,
                           "reason": v.reason, "evidence": v.evidence} for v in verdicts],
                         indent=2, sort_keys=True, default=str))
    else:
        print(claims.as_text(verdicts))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    report: dict[str, Any] = api.machine_report(args.db)
    for section, rows in report.items():
        print(f"[{section}]")
        for row in rows:
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "plan": cmd_plan, "site": cmd_site,
            "export": cmd_export, "merge": cmd_merge, "db": cmd_db, "nightly": cmd_nightly,
            "compare": cmd_compare, "claims": cmd_claims, "doctor": cmd_doctor}

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
