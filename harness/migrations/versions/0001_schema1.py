"""Schema 1 (archbench aaff16a and earlier): runs, hardware, results, derived, peaks.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table("schema_migrations",
                    sa.Column("version", sa.Integer, primary_key=True),
                    sa.Column("applied_at", TS, nullable=False))
    op.create_table("hardware",
                    sa.Column("fingerprint", sa.String(32), primary_key=True),
                    sa.Column("stable", sa.JSON, nullable=False),
                    sa.Column("first_seen", TS, nullable=False))
    op.create_table("runs",
                    sa.Column("run_id", sa.String(32), primary_key=True),
                    sa.Column("suite", sa.String(200), nullable=False),
                    sa.Column("code_version", sa.String(80), nullable=False),
                    sa.Column("hardware_fingerprint", sa.String(32), nullable=False),
                    sa.Column("started_at", TS, nullable=False),
                    sa.Column("finished_at", TS),
                    sa.Column("status", sa.String(20), nullable=False),
                    sa.Column("n_cells", sa.Integer, nullable=False))
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False, index=True),
        sa.Column("cell_id", sa.String(32), nullable=False, index=True),
        sa.Column("config_hash", sa.String(32), nullable=False),
        sa.Column("code_version", sa.String(80), nullable=False),
        sa.Column("hardware_fingerprint", sa.String(32), nullable=False, index=True),
        sa.Column("arch", sa.String(100), nullable=False),
        sa.Column("arch_version", sa.Integer, nullable=False),
        sa.Column("arch_config", sa.JSON, nullable=False),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("task_version", sa.Integer, nullable=False),
        sa.Column("task_config", sa.JSON, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("unit", sa.String(40), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("higher_is_better", sa.Boolean),
        sa.Column("spread", sa.Float),
        sa.Column("spread_kind", sa.String(20)),
        sa.Column("ci_low", sa.Float),
        sa.Column("ci_high", sa.Float),
        sa.Column("p90", sa.Float),
        sa.Column("p99", sa.Float),
        sa.Column("n_samples", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("error", sa.Text),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("kernel_path", sa.String(100)),
        sa.Column("device", sa.String(40), nullable=False),
        sa.Column("dtype", sa.String(20), nullable=False),
        sa.Column("threads", sa.Integer, nullable=False),
        sa.Column("samples", sa.JSON),
        sa.Column("summary", sa.JSON),
        sa.Column("extra", sa.JSON),
        sa.Column("volatile", sa.JSON),
        sa.Column("wall_s", sa.Float),
        sa.Column("created_at", TS, nullable=False))
    op.create_table(
        "derived",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hardware_fingerprint", sa.String(32), nullable=False, index=True),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("series", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("arch", sa.String(100), nullable=False),
        sa.Column("other_arch", sa.String(100)),
        sa.Column("value", sa.Float),
        sa.Column("unit", sa.String(40), nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("points", sa.JSON, nullable=False),
        sa.Column("code_version", sa.String(80), nullable=False),
        sa.Column("computed_at", TS, nullable=False))
    op.create_table(
        "hardware_peaks",
        sa.Column("hardware_fingerprint", sa.String(32), primary_key=True),
        sa.Column("device", sa.String(40), primary_key=True),
        sa.Column("dtype", sa.String(20), primary_key=True),
        sa.Column("threads", sa.Integer, primary_key=True),
        sa.Column("flops_per_s", sa.Float, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("n_samples", sa.Integer, nullable=False),
        sa.Column("measured_at", TS, nullable=False))


def downgrade() -> None:
    for table in ("hardware_peaks", "derived", "results", "runs", "hardware",
                  "schema_migrations"):
        op.drop_table(table)
