"""Schema 5: what a task declares for derived figures, stored with the task.

A task names the config key its length sweeps vary (``tasks.sweep_key``); a metric says whether
it is fitted against that key (``metric_specs.swept``: scaling exponents and crossovers) and
which role it plays in a figure combining two tasks (``metric_specs.role``: forward FLOP per
token, forward tokens per second; their product is the achieved FLOP/s). ``harness.derive``
reads these from the database instead of knowing tasks and metrics by name.

Tasks stored before this schema get what the harness then assumed for every task: the first
of ``context_len``/``seq_len`` in its config as the sweep key; ``latency_ms``,
``latency_vs_ref``, ``peak_memory_mib`` and ``state_bytes_measured`` swept; the ``flops``
task's ``forward_flops_per_token`` and ``prefill_latency``'s ``tokens_per_s`` as the two roles.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# what harness/derive.py hard-coded up to schema 4
OLD_LENGTH_KEYS = ("seq_len", "context_len")
OLD_SWEPT = ("latency_ms", "latency_vs_ref", "peak_memory_mib", "state_bytes_measured")
OLD_ROLES = {("flops", "forward_flops_per_token"): "forward_flop_per_token",
             ("prefill_latency", "tokens_per_s"): "forward_tokens_per_s"}


def upgrade() -> None:
    op.add_column("tasks", sa.Column("sweep_key", sa.String(100)))
    op.add_column("metric_specs", sa.Column("swept", sa.Boolean))
    op.add_column("metric_specs", sa.Column("role", sa.String(40)))
    tasks = sa.table("tasks", sa.column("name", sa.String), sa.column("digest", sa.String),
                     sa.column("config", sa.JSON), sa.column("sweep_key", sa.String))
    specs = sa.table("metric_specs", sa.column("task", sa.String), sa.column("name", sa.String),
                     sa.column("swept", sa.Boolean), sa.column("role", sa.String))
    bind = op.get_bind()
    for row in bind.execute(sa.select(tasks)).mappings().all():
        key = next((k for k in OLD_LENGTH_KEYS if k in (row["config"] or {})), None)
        bind.execute(tasks.update().where(tasks.c.name == row["name"],
                                          tasks.c.digest == row["digest"])
                     .values(sweep_key=key))
    bind.execute(specs.update().values(swept=specs.c.name.in_(OLD_SWEPT)))
    for (task, metric), role in OLD_ROLES.items():
        bind.execute(specs.update().where(specs.c.task == task, specs.c.name == metric)
                     .values(role=role))


def downgrade() -> None:
    raise NotImplementedError("archbench migrations go forward only; restore a backup")
