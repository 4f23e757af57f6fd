"""lm-evaluation-harness tasks on the cell's model, byte-level, offline.

The cell's architecture (or the model in ``checkpoint``) runs through
:class:`tasks._lm_eval_adapter.ArchbenchLM` under ``lm_eval.simple_evaluate``. Tasks are looked
up first among the ones shipped in ``tasks/lm_eval_tasks`` (a four-way capital-city choice, a
copy-the-word generation and the perplexity of short written paragraphs, all local JSONL), then
among lm-eval's built-in tasks, which work wherever their data is already cached (the cell runs
with the Hugging Face hubs offline). Each (lm-eval task, metric) is one metric named
``<task>/<metric>`` with lm-eval's higher-is-better flag and its stderr as the spread.

The model sees at most ``max_length`` bytes; by default the length the checkpoint was trained
on (the ``seq_len`` its producer task saved, e.g. lm_bpb's 128), so it is never asked to read
further back than it learnt to. Requests cut to fit are counted per lm-eval task on each row
(``truncated_requests``, ``truncations``). The task is shown but not ranked: the shipped tasks
are a few dozen items each, too few to tell variants apart.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tasks
from tasks.base import Metric, Task
from tasks.instruments import checkpoints
from tasks.instruments.context import CellContext

log = logging.getLogger(__name__)

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
SHIPPED = ("archbench_capitals", "archbench_copy", "archbench_prose")
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
BOOTSTRAP_ITERS = 1000  # stderr of non-mean aggregates (perplexities); means use the formula
UNITS = {"acc": "fraction", "acc_norm": "fraction", "exact_match": "fraction",
         "word_perplexity": "perplexity", "byte_perplexity": "perplexity",
         "bits_per_byte": "bits/byte"}
VERSION = 2  # 2: max_length from the checkpoint's training length; truncations recorded
DEFAULT_MAX_LENGTH = 512  # bytes, where no training length is known (a fresh model)


def _items(file: str) -> int:
    return sum(1 for line in (TASK_DIR / file).read_text(encoding="utf-8").splitlines()
               if line.strip())


HEADLINE_ITEMS = _items("capitals.jsonl")
# half-width of a 95% interval of an accuracy near 50% (normal approximation)
HEADLINE_HALF_WIDTH = 1.959963984540054 * math.sqrt(0.25 / HEADLINE_ITEMS)
UNRANKED_REASON = (f"the shipped lm-eval tasks have a few dozen items (archbench_capitals: "
                   f"{HEADLINE_ITEMS}): too few to rank variants (a 95% interval on "
                   f"{HEADLINE_ITEMS} items spans ±{HEADLINE_HALF_WIDTH:.2f} at 50% accuracy)")


@dataclass(frozen=True)
class Config:
    tasks: tuple[str, ...] = SHIPPED  # lm-eval task names: shipped ones, or cached built-ins
    # a tasks.instruments.checkpoints file; "task:NAME": the model task NAME trained for this cell's
    # architecture, config and seed (e.g. "task:lm_bpb"); empty: a freshly seeded model
    checkpoint: str = ""
    limit: int = 0  # documents per task; 0: all of them
    batch_size: int = 8
    # bytes the model sees; longer requests are cut on the left (and counted). 0: the length
    # the checkpoint was trained on (its saved seq_len), else DEFAULT_MAX_LENGTH
    max_length: int = 0

    def validate(self) -> None:
        if not self.tasks or not all(isinstance(t, str) and t for t in self.tasks):
            raise ValueError("tasks must be a non-empty list of lm-eval task names")
        if len(set(self.tasks)) != len(self.tasks):
            twice = next(t for i, t in enumerate(self.tasks) if t in self.tasks[:i])
            raise ValueError(f"tasks must name each lm-eval task once; got {twice[:60]!r} "
                             "twice")
        if self.limit < 0:
            raise ValueError("limit must be >= 0 (0: every document)")
        if self.batch_size < 1 or self.max_length < 0:
            raise ValueError("batch_size must be >= 1 and max_length >= 0 (0: the "
                             "checkpoint's training length)")


def task_manager(names: tuple[str, ...]) -> Any:
    """A TaskManager that knows ``names``: shipped tasks only, unless one is not shipped.

    Indexing lm-eval's thousands of built-in YAMLs takes seconds, so it happens only when a
    name is not ours. A name found nowhere is a ValueError naming close matches.
    """
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
    if all(n in manager.all_tasks for n in names):
        return manager
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=True)
    missing = [n for n in names if n not in manager.all_tasks]
    if missing:
        close = difflib.get_close_matches(missing[0], manager.all_tasks, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"lm_eval: unknown lm-eval task {missing[0]!r}{hint} "
                         f"(shipped: {', '.join(SHIPPED)})")
    return manager


def checkpoint_path(cfg: Config, ctx: CellContext) -> str | None:
    """The checkpoint file ``cfg.checkpoint`` names (``task:NAME`` resolved), or None."""
    try:
        return ctx.checkpoint_path(cfg.checkpoint)
    except ValueError as err:
        raise ValueError(f"lm_eval: {err}") from None


def max_length(cfg: Config, path: str | None) -> tuple[int, str]:
    """The ``max_length`` to evaluate at, and where it came from: the config if set, else the
    ``seq_len`` the checkpoint at ``path`` records, else :data:`DEFAULT_MAX_LENGTH`."""
    if cfg.max_length:
        return cfg.max_length, "config"
    if path is None:
        return DEFAULT_MAX_LENGTH, "default (a fresh model has no training length)"
    seq_len = checkpoints.read_metadata(path).get("extra", {}).get("seq_len")
    if isinstance(seq_len, int) and seq_len > 0:
        return seq_len, "checkpoint seq_len"
    log.warning("lm_eval: checkpoint %s records no training length (seq_len); evaluating at "
                "max_length %d", path, DEFAULT_MAX_LENGTH)
    return DEFAULT_MAX_LENGTH, "default (the checkpoint records no training length)"


def _model(cfg: Config, ctx: CellContext) -> Any:
    checkpoint_path(cfg, ctx)  # a missing task checkpoint names the lm_eval task
    try:
        return ctx.model(cfg.checkpoint)
    except ValueError as err:
        raise ValueError(f"lm_eval: {err}") from None


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None  # lm-eval writes "N/A" where it has no stderr
    return out if math.isfinite(out) else None


def to_metrics(results: dict[str, Any], method_prefix: str) -> list[Metric]:
    """One Metric per (task, metric, filter) in a ``simple_evaluate`` result, sorted."""
    out = []
    for task, scores in sorted(results["results"].items()):
        better = results.get("higher_is_better", {}).get(task, {})
        version = results.get("versions", {}).get(task)
        shots = results.get("n-shot", {}).get(task, 0)
        n_docs = int(scores.get("sample_len", 0) or 0) or 1
        for key, value in sorted(scores.items()):
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            name = f"{task}/{metric}" if filt == "none" else f"{task}/{metric}/{filt}"
            stderr = _number(scores.get(f"{metric}_stderr,{filt}"))
            out.append(Metric(
                name=name, unit=UNITS.get(metric, "score"), value=_number(value),
                higher_is_better=better.get(metric), n_samples=n_docs,
                spread=stderr, spread_kind="stderr" if stderr is not None else None,
                method=f"{method_prefix}: task {task} v{version}, {shots}-shot, "
                       f"{n_docs} documents, filter {filt}",
            ))
    return out


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    import lm_eval

    from tasks._lm_eval_adapter import ArchbenchLM  # lazy: it imports lm-eval, an optional extra

    manager = task_manager(cfg.tasks)
    model = _model(cfg, ctx)
    path = checkpoint_path(cfg, ctx)
    length, source = max_length(cfg, path)
    lm = ArchbenchLM(model=model, max_length=length, batch_size=cfg.batch_size,
                     device=ctx.device, dtype=ctx.dtype)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=list(cfg.tasks), task_manager=manager, limit=cfg.limit or None,
        log_samples=False, bootstrap_iters=BOOTSTRAP_ITERS, random_seed=ctx.seed,
        numpy_random_seed=ctx.seed, torch_random_seed=ctx.seed, fewshot_random_seed=ctx.seed,
    )
    prefix = (f"lm-evaluation-harness {lm_eval.__version__} simple_evaluate, byte-level "
              f"archbench adapter, max_length {length}")
    extra = {"num_params": model.num_params(), "checkpoint": path, "max_length": length,
             "max_length_source": source}
    out = []
    for m in to_metrics(results, prefix):
        cuts = lm.truncations.get(m.name.split("/", 1)[0], {})
        out.append(Metric(**{**m.to_dict(), "extra": {
            **extra, "truncated_requests": sum(cuts.values()), "truncations": dict(cuts)}}))
    return out


TASK = tasks.register(Task(
    name="lm_eval", kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="archbench_capitals/acc", doc=__doc__ or "", env=dict(OFFLINE),
    ranked=False, unranked_reason=UNRANKED_REASON,
))
