"""Leaderboard boards: rows grouped by the setting they were measured in.

A *board* is one (machine, task, task config, budget, device, dtype, threads): a column never
mixes settings. The *budget* is the suite's ``model`` section of the run that stored the row
(``runs.config["model"]``), or ``{d_model, n_layers}`` of the row's ``arch_config`` for runs
recorded without a config. Within a board, one line per (variant, arch_config) and one cell per
metric: the newest finished result per seed of the newest *version* only (the newest row's
(``arch_digest``, ``task_digest``); rows without digests: one version per ``code_version``),
several seeds as their mean with a 95% Student t CI (``seeds.mean_ci``).

Pure functions of rows (``queries.board_rows``), runs and the stored catalog: no registries.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from harness import db
from harness.ids import canonical_hash
from harness.outputs import slug

METRIC_LABELS = {
    "accuracy": "accuracy", "latency_ms": "latency (ms)", "latency_vs_ref": "latency (x ref)",
    "tokens_per_s": "throughput (tokens/s)", "energy_per_token_j": "energy per token (J)",
    "peak_memory_mib": "peak memory (MiB)", "forward_flops_per_token": "forward FLOP/token",
    "perplexity": "perplexity", "loss": "loss",
}
BUDGET_FALLBACK_KEYS = ("d_model", "n_layers")
SWEEP_KEYS = ("seq_len", "context_len")  # a task config key a length sweep varies


def label(metric: str) -> str:
    """A readable column name: the known ones mapped, others with '_' as spaces."""
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def budget_of(row: dict[str, Any], run_configs: dict[str, Any]) -> dict[str, Any]:
    """The run's ``model`` section, else the row's width and depth."""
    config = run_configs.get(row["run_id"])
    if isinstance(config, dict) and isinstance(config.get("model"), dict):
        return config["model"]
    arch = row.get("arch_config") or {}
    return {k: arch[k] for k in BUDGET_FALLBACK_KEYS if k in arch}


def _has_model(config: Any) -> bool:
    return isinstance(config, dict) and isinstance(config.get("model"), dict)


def version_of(row: dict[str, Any]) -> tuple[str, str, str]:
    if row.get("arch_digest") is None and row.get("task_digest") is None:
        return ("code", row["code_version"] or "", "")
    return ("digest", row.get("arch_digest") or "", row.get("task_digest") or "")


def newest_version(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (oldest first) of one (machine, setting, metric): per seed the newest finished row
    (else the newest row) among the rows of the newest row's version."""
    version = version_of(rows[-1])
    per_seed: dict[int, dict[str, Any]] = {}
    for row in rows:
        if version_of(row) != version:
            continue
        kept = per_seed.get(row["seed"])
        if kept is None or row["status"] in db.DONE_STATUSES \
                or kept["status"] not in db.DONE_STATUSES:
            per_seed[row["seed"]] = row
    return [per_seed[s] for s in sorted(per_seed)]


def group(rows: list[dict[str, Any]], run_configs: dict[str, Any]
          ) -> dict[tuple, dict[tuple[str, str], dict[str, list[dict[str, Any]]]]]:
    """board key -> (arch, arch_config text) -> metric -> the rows shown (one per seed)."""
    by_setting: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    budgets: dict[str, str] = {}  # run id -> budget, for runs with a model section
    texts: dict[str, tuple[str, str, str]] = {}  # setting id -> its configs' canonical text
    for row in rows:  # oldest first
        text = texts.get(row.get("setting_id") or "")
        if text is None:
            text = (canon(row["task_config"]), canon(row["arch_config"]),
                    canon(budget_of(row, {})))
            if row.get("setting_id"):
                texts[row["setting_id"]] = text
        budget = budgets.get(row["run_id"])
        if budget is None:
            if _has_model(run_configs.get(row["run_id"])):
                budget = budgets[row["run_id"]] = canon(run_configs[row["run_id"]]["model"])
            else:  # the row's own width and depth
                budget = text[2]
        by_setting[(row["hardware_fingerprint"], row["task"], text[0], budget, row["device"],
                    row["dtype"], row["threads"], row["arch"], text[1],
                    row["metric"])].append(row)
    boards: dict[tuple, dict[tuple[str, str], dict[str, list[dict[str, Any]]]]] = \
        defaultdict(lambda: defaultdict(dict))
    for key, mine in by_setting.items():
        arch, arch_cfg, metric = key[7:]
        boards[key[:7]][(arch, arch_cfg)][metric] = newest_version(mine)
    return boards


def task_kind(task: str, info: dict[str, Any] | None, units: set[str]) -> str:
    """The catalog's kind, else "accuracy" where a figure is a fraction."""
    if info and info.get("kind"):
        return str(info["kind"])
    return "accuracy" if "fraction" in units else "efficiency"


def metric_order(task_info: dict[str, Any] | None, metrics: set[str]) -> list[str]:
    """Headline first, then the catalog's order, then the rest by name."""
    known = [m["name"] for m in (task_info or {}).get("metrics", [])]
    head = (task_info or {}).get("headline")
    order = ([head] if head in metrics else []) + [m for m in known if m in metrics]
    order += sorted(metrics - set(order))
    return list(dict.fromkeys(order))


MAIN_KEYS = ("seq_len", "context_len", "batch_size", "steps", "n_pairs", "n_keys",
             "vocab_size", "n_train", "train_size", "n_test", "test_size")


def setting_items(task_config: dict[str, Any], budget: dict[str, Any], device: str,
                  dtype: str, threads: int) -> list[tuple[str, str]]:
    """What a board's header states, as (name, value) pairs: the task config keys that
    matter most (lengths, batch, steps, sizes), the budget, device, dtype and threads."""
    items = [(k, _short(task_config[k])) for k in MAIN_KEYS if k in task_config]
    items += [(f"model {k}", _short(v)) for k, v in sorted(budget.items())]
    items += [("device", device), ("dtype", dtype), ("threads", str(threads))]
    return items


def other_settings(task_config: dict[str, Any]) -> list[tuple[str, str]]:
    """The rest of the task config (learning-rate grid, patience, ...)."""
    return [(k, _short(v)) for k, v in sorted(task_config.items()) if k not in MAIN_KEYS]


def _short(value: Any) -> str:
    return value if isinstance(value, str) else canon(value)


def build_boards(rows: list[dict[str, Any]], runs: dict[str, dict[str, Any]],
                 catalog: dict[str, dict[str, dict[str, Any]]], cell: Any
                 ) -> list[dict[str, Any]]:
    """Every board, sorted by (machine, kind, task, setting); ``cell(rows, column)`` turns a
    cell's rows (one per seed) into its view (``harness.pages.cell``)."""
    configs = {r: run.get("config") for r, run in runs.items()}
    out = []
    for key, lines in group(rows, configs).items():
        fp, task, task_cfg, budget, device, dtype, threads = key
        info = catalog["tasks"].get(task)
        metrics = {m for line in lines.values() for m in line}
        units = {r["unit"] for line in lines.values() for rs in line.values() for r in rs}
        columns = [_column(m, lines, info) for m in metric_order(info, metrics)]
        board_rows = []
        for (arch, arch_cfg), line in lines.items():
            cells = [cell(line.get(c["metric"], []), c) for c in columns]
            setting_id = next((r["setting_id"] for rs in line.values() for r in rs
                               if r.get("setting_id")), None)
            board_rows.append({"arch": arch, "arch_config": json.loads(arch_cfg),
                               "arch_config_text": arch_cfg, "cells": cells,
                               "setting_id": setting_id})
        _rank(board_rows, columns, info)
        counts = defaultdict(int)
        for r in board_rows:
            counts[r["arch"]] += 1
        for r in board_rows:
            r["show_config"] = counts[r["arch"]] > 1
        last = _last_run(lines, runs)
        task_config, budget_d = json.loads(task_cfg), json.loads(budget)
        ident = canonical_hash(list(key), 10)
        out.append({
            "key": key, "id": f"{slug(task)}-{ident}", "fingerprint": fp, "task": task,
            "kind": task_kind(task, info, units), "task_config": task_config,
            "budget": budget_d, "budget_text": _budget_text(budget_d), "device": device,
            "dtype": dtype, "threads": threads,
            "setting": setting_items(task_config, budget_d, device, dtype, threads),
            "setting_more": other_settings(task_config),
            "columns": columns, "rows": board_rows,
            "head_rows": [r for line in lines.values()
                          for r in line.get(columns[0]["metric"], [])],
            "ranked": bool((info or {}).get("ranked", True)),
            "unranked_reason": (info or {}).get("unranked_reason") or "",
            "last_run": last,
        })
    out.sort(key=lambda b: (b["fingerprint"], b["kind"] != "accuracy", b["task"],
                            _config_order(b["task_config"]), b["budget_text"], b["device"],
                            b["dtype"], b["threads"], b["id"]))
    return out


def _last_run(lines: dict, runs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The run of a board's newest row shown, with its start (else the row's time)."""
    last = max((r for line in lines.values() for rs in line.values() for r in rs),
               key=lambda r: r["id"])
    started = runs.get(last["run_id"], {}).get("started_at") or last.get("created_at")
    return {"run_id": last["run_id"],
            "date": started.strftime("%Y-%m-%d %H:%M") if started else "-"}


def _config_order(config: dict[str, Any]) -> list[tuple]:
    """Sort key of a task config: numbers by value (64 before 128), other values as text."""
    return [(k, 0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool)
            else (k, 1, 0.0, canon(v)) for k, v in sorted(config.items())]


def _budget_text(budget: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_short(v)}" for k, v in sorted(budget.items())) or "unknown size"


def _column(metric: str, lines: dict, info: dict[str, Any] | None) -> dict[str, Any]:
    sample = min((r for line in lines.values() for r in line.get(metric, [])),
                 key=lambda r: r["id"])
    spec = next((m for m in (info or {}).get("metrics", []) if m["name"] == metric), {})
    hib = spec.get("higher_is_better", sample["higher_is_better"])
    unit = spec.get("unit") or sample["unit"]
    text = label(metric)
    if unit and f"({unit})" not in text and unit not in ("fraction", ""):
        text += f" ({unit})"
    return {"metric": metric, "label": text, "unit": unit, "higher_is_better": hib,
            "doc": spec.get("doc") or "", "ranked": bool((info or {}).get("ranked", True))}


def _rank(board_rows: list[dict[str, Any]], columns: list[dict[str, Any]],
          info: dict[str, Any] | None) -> None:
    """Order lines by the headline (first) column, best first; mark the best cell of every
    column that has a direction; lines without a headline value come last, unranked."""
    for i, col in enumerate(columns):
        hib = col["higher_is_better"]
        values = [r["cells"][i]["value"] for r in board_rows
                  if r["cells"][i]["value"] is not None]
        if hib is None or not values:
            continue
        best = max(values) if hib else min(values)
        for r in board_rows:
            r["cells"][i]["best"] = r["cells"][i]["value"] == best and len(board_rows) > 1
    head = columns[0]
    sign = -1 if head["higher_is_better"] else 1

    def order(r: dict[str, Any]) -> tuple:
        v = r["cells"][0]["value"]
        return (v is None, 0.0 if v is None else sign * v, r["arch"], r["arch_config_text"])

    board_rows.sort(key=order)
    ranked = head["higher_is_better"] is not None and (info or {}).get("ranked", True)
    rank, previous = 0, None
    for n, r in enumerate(board_rows, 1):
        v = r["cells"][0]["value"]
        if not ranked or v is None:
            r["rank"] = None
            continue
        if v != previous:
            rank, previous = n, v
        r["rank"] = rank


def pareto_inputs(board: dict[str, Any], boards: list[dict[str, Any]]
                  ) -> list[tuple[str, dict[str, Any], int]]:
    """For an accuracy board: the efficiency boards on the same machine, device, dtype and
    threads, one per (task, headline metric) sharing the most variants (then the longest
    length), as (task, board, index of its headline column)."""
    archs = {r["arch"] for r in board["rows"]}
    best: dict[str, tuple[tuple, dict[str, Any]]] = {}
    for other in boards:
        if other["kind"] == "accuracy" or other["fingerprint"] != board["fingerprint"] or \
                (other["device"], other["dtype"], other["threads"]) != \
                (board["device"], board["dtype"], board["threads"]):
            continue
        common = len(archs & {r["arch"] for r in other["rows"]})
        if common < 2:
            continue
        length = max((v for k, v in other["task_config"].items()
                      if k in SWEEP_KEYS and isinstance(v, (int, float))), default=0)
        score = (other["budget"] == board["budget"], common, length, other["id"])
        if other["task"] not in best or score > best[other["task"]][0]:
            best[other["task"]] = (score, other)
    return [(task, b, 0) for task, (_, b) in sorted(best.items())]


def sweeps(boards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Efficiency boards that differ only in one length key, grouped: the scaling plots."""
    groups: dict[tuple, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    for b in boards:
        if b["kind"] == "accuracy":
            continue
        for key in SWEEP_KEYS:
            x = b["task_config"].get(key)
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                rest = {k: v for k, v in b["task_config"].items() if k != key}
                groups[(b["fingerprint"], b["task"], key, canon(rest), b["budget_text"],
                        b["device"], b["dtype"], b["threads"])].append((x, b))
                break
    out = []
    for gkey, members in sorted(groups.items(), key=lambda kv: canon(list(kv[0]))):
        if len({x for x, _ in members}) < 2:
            continue
        out.append({"key": gkey, "fingerprint": gkey[0], "task": gkey[1], "x_key": gkey[2],
                    "rest": json.loads(gkey[3]), "budget_text": gkey[4],
                    "members": sorted(members, key=lambda m: (m[0], m[1]["id"]))})
    return out
