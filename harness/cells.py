"""Figures as text for the site: significant digits, CIs, the marks a reader must see.

Pure functions of a stored result row (no database, no registries): what a cell shows, its
details, and its marks (noisy, contended, CI target missed, not converged, ...).
"""

from __future__ import annotations

import json
import math
from typing import Any

from tasks.instruments.stats import NOISY_IQR_OVER_MEDIAN

TIMED_UNITS = frozenset({"ms", "tokens/s", "x reference"})


def fmt(value: float | None, digits: int = 3) -> str:
    """Significant-digit formatting that keeps large and small numbers readable."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 5 or magnitude <= -4:
        return f"{value:.{digits - 1}e}"
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"



def shade(column: dict[str, Any], value: float | None, floor: float | None = None) -> str | None:
    """Heat-map background for fractions where higher is better, red at the task's trivial
    floor (0 when the row has none) to green at 1; none for an unranked task."""
    if value is None or column["unit"] != "fraction" or column["higher_is_better"] is not True:
        return None
    if not column.get("ranked", True):
        return None
    low = floor if floor is not None and floor < 1 else 0.0
    frac = (value - low) / (1 - low)
    return f"hsl({round(120 * min(max(frac, 0.0), 1.0))}, 60%, 85%)"


def flags(row: dict[str, Any] | None) -> list[dict[str, str]]:
    """Marks a reader must see beside a row's number: for a trained row not converged, not
    learned in range (length generalisation is then not what failed); for a timed row noisy,
    contended, CI target missed (``timing_flags``)."""
    extra = (row or {}).get("extra") or {}
    out = []
    if extra.get("not_converged"):
        out.append({"mark": "not converged", "kind": "training",
                    "why": extra.get("convergence", "")})
    if extra.get("learned_in_range") is False:
        out.append({"mark": "not learned in range", "kind": "training",
                    "why": f"in-range accuracy {fmt(extra.get('accuracy_in_range'))} < 0.9: the "
                           "model never learned the task, so this is not a length "
                           "generalisation result"})
    if row is not None and row["status"] == "ok":
        out.extend(timing_flags(row))
    return out


def is_timed(row: dict[str, Any]) -> bool:
    """A latency or throughput figure: it is shown with its CI and its trust marks."""
    return row["unit"] in TIMED_UNITS or "noisy" in (row.get("extra") or {})


def _plain(value: Any) -> str:
    """A stored fact as short text: numbers through ``fmt``, containers as sorted JSON."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float)):
        return fmt(float(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _relative(part: float | None, whole: float | None) -> str:
    """'12%' for part / whole, '' when either is missing or whole is 0."""
    if part is None or whole is None or whole == 0:
        return ""
    return f"{abs(part / whole):.0%}"


CONTENTION_FIGURES = ("others_cpu_cores", "others_beyond_free_cores", "steal_fraction",
                      "throttled_fraction", "load_avg_after", "score")


def contention_note(contention: Any) -> str:
    """The figures behind a contended mark, short enough for a tooltip: the kept attempt's
    rule hits ('reasons') and figures (``tasks.instruments.contention``) and how many attempts were
    made; a flat dict of other figures is listed as it is."""
    if not isinstance(contention, dict):
        return _plain(contention) if contention else ""
    processes = contention.get("processes")
    if isinstance(processes, list):  # pooled over fresh processes: each one's own note
        notes = [f"process {i + 1}: {contention_note(p.get('contention'))}"
                 for i, p in enumerate(processes)
                 if isinstance(p, dict) and p.get("contended")]
        return "; ".join(notes) or f"{len(processes)} processes, none contended"
    attempts, kept = contention.get("attempts"), contention.get("kept_attempt")
    figures = contention
    if isinstance(attempts, list) and isinstance(kept, int) and 0 <= kept < len(attempts) \
            and isinstance(attempts[kept], dict):
        figures = attempts[kept]
    parts = [str(r) for r in figures.get("reasons") or []]
    known = [k for k in CONTENTION_FIGURES if figures.get(k) is not None]
    if figures is contention and not known and not parts:
        known = sorted(k for k, v in contention.items()
                       if isinstance(v, (int, float, str)) and not isinstance(v, bool))
    parts += [f"{k} {_plain(figures[k])}" for k in known]
    if isinstance(contention.get("n_attempts"), int) and isinstance(kept, int):
        parts.append(f"kept attempt {kept + 1} of {contention['n_attempts']}"
                     + (f" ({contention['stop_reason']})" if contention.get("stop_reason")
                        else ""))
    return "; ".join(parts)


def timing_flags(row: dict[str, Any]) -> list[dict[str, str]]:
    """noisy (IQR/median above the threshold), contended (other processes used the CPU while
    it was timed; the recorded figures go in the title), CI target missed (``ci_met`` false:
    the CI half-width stayed above ``ci_target`` x median, tasks.instruments.timing)."""
    extra = row.get("extra") or {}
    out = []
    if extra.get("noisy"):
        rel = _relative(row.get("spread"), row.get("value"))
        out.append({"mark": "noisy", "kind": "noisy",
                    "why": f"noisy: IQR/median {rel + ' ' if rel else ''}> "
                           f"{NOISY_IQR_OVER_MEDIAN:.0%}: the timing samples spread widely, "
                           "so compare this figure with care"})
    if extra.get("contended"):
        facts = contention_note(extra.get("contention"))
        out.append({"mark": "contended", "kind": "contended",
                    "why": "contended: other processes used the CPU while this was timed"
                           + (f" ({facts})" if facts else "")})
    if extra.get("ci_met") is False:
        target = extra.get("ci_target")
        half = (None if row.get("ci_low") is None or row.get("ci_high") is None
                else (row["ci_high"] - row["ci_low"]) / 2)
        rel = _relative(half, row.get("value"))
        goal = (f" of ± {target:.0%} of the median"
                if isinstance(target, (int, float)) and not isinstance(target, bool)
                else (f" ({_plain(target)})" if target is not None else ""))
        out.append({"mark": "CI target missed", "kind": "ci",
                    "why": "CI target missed: sampling stopped at its cap before the 95% CI of "
                           f"the median reached its target{goal}"
                           + (f"; achieved ± {rel} of the median" if rel else "")})
    return out


def ci_text(row: dict[str, Any]) -> str:
    """'[3.90–4.60]' (95% CI of the median) for a timed row, 'no CI (n=5)' without one."""
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        return f"[{fmt(row['ci_low'])}–{fmt(row['ci_high'])}]"
    return f"no CI (n={row['n_samples']})"


def ref_view(row: dict[str, Any]) -> dict[str, str] | None:
    """'1.8x ref' beside a latency in ms whose row stored the reference-normalised ratio."""
    extra = row.get("extra") or {}
    ratio = extra.get("ref_ratio")
    if row["unit"] != "ms" or not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
        return None
    ref = extra.get("ref_ms")
    timed = f" ({fmt(float(ref))} ms)" if isinstance(ref, (int, float)) else ""
    return {"text": f"{fmt(float(ratio), 2)}x ref",
            "why": f"{fmt(float(ratio))} x the latency of a fixed reference workload{timed} "
                   "timed in the same rounds: moves less with machine load than the raw ms"}


def baseline_note(extra: dict[str, Any]) -> str:
    """'chance 0.1; floor 0.21 (strategy); Wilson 95% [a, b]; ' for an accuracy row."""
    text = f"chance {fmt(extra['chance'])}; " if extra.get("chance") is not None else ""
    if extra.get("floor") is not None:
        text += f"floor {fmt(extra['floor'])} ({extra.get('floor_strategy', '')}); "
    if extra.get("wilson95"):
        low, high = extra["wilson95"]
        text += f"Wilson 95% interval over test items [{fmt(low)}, {fmt(high)}]; "
    return text


def training_note(facts: dict[str, Any]) -> str:
    """'LR ...; N params; T tokens; ' for a trained row (or its seed mean), else ''."""
    lrs = facts.get("chosen_lrs") or ([facts["lr"]] if "lr" in facts else [])
    if not lrs:
        return ""
    grid = facts.get("lr_grid")
    text = f"chosen LR {', '.join(f'{v:g}' for v in lrs)}"
    text += f" from grid {', '.join(f'{v:g}' for v in grid)}; " if grid else "; "
    if "num_params" in facts:
        text += f"{facts['num_params']:,} params; "
    if "token_budget" in facts:
        text += f"{facts['token_budget']:,} training tokens; "
    return text


def seed_view(row: dict[str, Any], mean: dict[str, Any]) -> dict[str, Any]:
    p = mean["points"]
    half = (p["ci_high"] - p["ci_low"]) / 2
    marks = "".join(f"{f['mark']}: {f['why']}; " for f in flags(row))
    title = (f"{marks}mean of {p['n_seeds']} seeds {p['values']}; 95% CI [{fmt(p['ci_low'])}, "
             f"{fmt(p['ci_high'])}]; {baseline_note(row.get('extra') or {})}"
             f"{training_note(p)}{row['method']}; code {row['code_version']}")
    return {"status": "ok", "text": f"{fmt(mean['value'])} ± {fmt(half)} (n={p['n_seeds']})",
            "title": title, "sort": repr(mean["value"]), "ci": "", "ref": None}



def cell_view(row: dict[str, Any] | None) -> dict[str, Any]:
    """Text, tooltip, sort key and marks of one row; a timed row shows value, unit and CI."""
    if row is None:
        return {"status": "not run", "text": "not run", "title": "no result", "sort": "",
                "flags": [], "ci": "", "ref": None}
    if row["status"] != "ok":
        error = (row["error"] or "").strip().splitlines()
        return {"status": row["status"], "text": row["status"],
                "title": error[-1][:300] if error else row["status"], "sort": "", "flags": [],
                "ci": "", "ref": None}
    ci = (f"95% CI of median [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]; "
          if row["ci_low"] is not None else "")
    extra = row.get("extra") or {}
    marks = "".join(f"{f['mark']}: {f['why']}; " for f in flags(row))
    ref = ref_view(row)
    title = (f"{marks}{ci}IQR {fmt(row['spread'])}; n={row['n_samples']}; "
             f"{ref['why'] + '; ' if ref else ''}"
             f"{baseline_note(extra)}{training_note(extra)}method: {row['method']}; "
             f"kernel: {row['kernel_path'] or '-'}; {row['device']} {row['dtype']} "
             f"{row['threads']} threads; code {row['code_version']}")
    if is_timed(row):
        text, shown_ci = f"{fmt(row['value'])} {row['unit']}", ci_text(row)
    else:
        spread = f" ± {fmt(row['spread'] / 2)}" if row["spread"] is not None else ""
        text, shown_ci = fmt(row["value"]) + spread, ""
    return {"status": "ok", "text": text, "title": title, "sort": repr(row["value"]),
            "flags": flags(row), "ci": shown_ci, "ref": ref}

