"""The nightly report: what a nightly ran, found and published, as Markdown and JSON.

:mod:`harness.nightly` fills a :class:`NightlyReport`; :func:`write_report` writes
``nightly-<UTC time>-<id>.md`` and ``.json`` beside each other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

EXIT_CLEAN, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


@dataclass
class NightlyReport:
    nightly_id: str
    started_at: str
    fingerprint: str = ""
    code_version: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    site: str | None = None
    exit_code: int = EXIT_CLEAN

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_report(report: NightlyReport, folder: Path) -> tuple[Path, Path]:
    """``nightly-<UTC time>-<id>.md`` and ``.json`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(report.started_at).strftime("%Y%m%dT%H%M%SZ")
    stem = folder / f"nightly-{stamp}-{report.nightly_id}"
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    js.write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True, default=str) + "\n")
    md.write_text(markdown(report))
    return md, js


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def markdown(report: NightlyReport) -> str:
    verdict = {EXIT_CLEAN: "clean", EXIT_REGRESSION: "confirmed regression",
               EXIT_ERROR: "error"}[report.exit_code]
    lines = [f"# archbench nightly {report.nightly_id}: {verdict} (exit {report.exit_code})",
             "", f"- started: {report.started_at} UTC",
             f"- machine: `{report.fingerprint}`; code: `{report.code_version}`",
             f"- series compared: {report.counts.get('series', 0)} "
             f"({', '.join(f'{k} {v}' for k, v in sorted(report.counts.items()) if k != 'series')})"
             ]
    if report.site:
        lines.append(f"- site: {report.site}")
    lines += ["", "## Runs", "", "| kind | suite | run | measured | already done | statuses |",
              "|---|---|---|---|---|---|"]
    for r in report.runs:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items())) or "-"
        lines.append(f"| {r['kind']} | {r['suite']} | `{r['run_id']}` | {r['measured']} | "
                     f"{r['skipped']} | {statuses} |")
    lines += ["", "## Changes", ""]
    if not report.changes:
        lines.append("No series changed beyond its noise.")
    else:
        lines += ["| change | confirmed | variant | task | metric | baseline | new | change | "
                  "p | threshold | confidence |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in report.changes:
            first = c["detail"]["first"]
            unit = c["detail"]["unit"]
            lines.append(
                f"| {c['change']} | {'yes' if c['confirmed'] else 'no'} | {c['arch']} | "
                f"{c['task']} | {c['metric']} | {_num(first['base_center'])} {unit} | "
                f"{_num(first['new_center'])} {unit} | {_pct(c['rel_change'])} | "
                f"{_num(c['p_value'])} | {_pct(c['threshold']).lstrip('+')} | "
                f"{c['confidence']} |")
        lines += ["", "Method: " + report.changes[0]["method"]]
    if report.errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in report.errors]
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"
