"""Schema 3: identity by content, stored metadata, nightly history.

- results: ``setting_id`` (the series across code versions and seeds, filled in for every
  existing row), ``arch_digest`` and ``task_digest`` (unknown for older rows: null); one
  finished result per cell, machine and *run* (another run may re-measure it), and an index
  by series;
- cell_claims keyed by cell and machine only (the cell id carries the code's digests); live
  claims are dropped, so stop runners before upgrading;
- runs: ``kind``, ``config``, ``rerun``, ``nightly_id``;
- variants, tasks, metric_specs: what was measured, as it was; nightlies and change_points.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from harness.ids import setting_id

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
DONE = sa.text("status IN ('ok', 'unavailable', 'unsupported')")
CHUNK = 5000


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("setting_id", sa.String(32)))
        batch.add_column(sa.Column("arch_digest", sa.String(16)))
        batch.add_column(sa.Column("task_digest", sa.String(16)))
    _fill_setting_ids()
    bind = op.get_bind()
    if "ux_results_done" in {i["name"] for i in sa.inspect(bind).get_indexes("results")}:
        op.drop_index("ux_results_done", "results")
    try:
        with bind.begin_nested():
            op.create_index("ux_results_done", "results",
                            ["cell_id", "hardware_fingerprint", "run_id", "metric"],
                            unique=True, sqlite_where=DONE, postgresql_where=DONE)
    except sa.exc.IntegrityError:  # a run that stored a cell twice (before schema 2)
        pass
    op.create_index("ix_results_series", "results",
                    ["hardware_fingerprint", "setting_id", "metric"])

    op.drop_table("cell_claims")
    op.create_table("cell_claims",
                    sa.Column("cell_id", sa.String(32), primary_key=True),
                    sa.Column("hardware_fingerprint", sa.String(32), primary_key=True),
                    sa.Column("owner", sa.String(32), nullable=False, index=True),
                    sa.Column("claimed_at", TS, nullable=False),
                    sa.Column("heartbeat_at", TS, nullable=False),
                    sa.Column("expires_at", TS, nullable=False))

    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(20)))
        batch.add_column(sa.Column("config", sa.JSON))
        batch.add_column(sa.Column("rerun", sa.String(10)))
        batch.add_column(sa.Column("nightly_id", sa.String(32)))
        batch.create_index("ix_runs_nightly_id", ["nightly_id"])

    op.create_table("variants",
                    sa.Column("name", sa.String(100), primary_key=True),
                    sa.Column("digest", sa.String(16), primary_key=True),
                    sa.Column("version", sa.Integer, nullable=False),
                    sa.Column("family", sa.String(100), nullable=False),
                    sa.Column("causal", sa.Boolean, nullable=False),
                    sa.Column("papers", sa.JSON, nullable=False),
                    sa.Column("config_keys", sa.JSON, nullable=False),
                    sa.Column("doc", sa.Text, nullable=False),
                    sa.Column("first_seen", TS, nullable=False))
    op.create_table("tasks",
                    sa.Column("name", sa.String(100), primary_key=True),
                    sa.Column("digest", sa.String(16), primary_key=True),
                    sa.Column("version", sa.Integer, nullable=False),
                    sa.Column("kind", sa.String(20), nullable=False),
                    sa.Column("headline", sa.String(100), nullable=False),
                    sa.Column("config", sa.JSON, nullable=False),
                    sa.Column("ranked", sa.Boolean, nullable=False),
                    sa.Column("unranked_reason", sa.Text, nullable=False),
                    sa.Column("needs_causal", sa.Boolean, nullable=False),
                    sa.Column("doc", sa.Text, nullable=False),
                    sa.Column("first_seen", TS, nullable=False))
    op.create_table("metric_specs",
                    sa.Column("task", sa.String(100), primary_key=True),
                    sa.Column("task_digest", sa.String(16), primary_key=True),
                    sa.Column("name", sa.String(100), primary_key=True),
                    sa.Column("unit", sa.String(40), nullable=False),
                    sa.Column("higher_is_better", sa.Boolean),
                    sa.Column("doc", sa.Text, nullable=False))
    op.create_table("nightlies",
                    sa.Column("nightly_id", sa.String(32), primary_key=True),
                    sa.Column("hardware_fingerprint", sa.String(32), nullable=False),
                    sa.Column("code_version", sa.String(80), nullable=False),
                    sa.Column("started_at", TS, nullable=False),
                    sa.Column("finished_at", TS),
                    sa.Column("status", sa.String(20), nullable=False),
                    sa.Column("exit_code", sa.Integer),
                    sa.Column("config", sa.JSON),
                    sa.Column("report", sa.JSON))
    op.create_table("change_points",
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("hardware_fingerprint", sa.String(32), nullable=False),
                    sa.Column("setting_id", sa.String(32), nullable=False),
                    sa.Column("metric", sa.String(100), nullable=False),
                    sa.Column("arch", sa.String(100), nullable=False),
                    sa.Column("task", sa.String(100), nullable=False),
                    sa.Column("run_id", sa.String(32), nullable=False),
                    sa.Column("confirm_run_id", sa.String(32)),
                    sa.Column("nightly_id", sa.String(32)),
                    sa.Column("change", sa.String(20), nullable=False),
                    sa.Column("confirmed", sa.Boolean, nullable=False),
                    sa.Column("rel_change", sa.Float),
                    sa.Column("p_value", sa.Float),
                    sa.Column("threshold", sa.Float),
                    sa.Column("confidence", sa.String(10), nullable=False),
                    sa.Column("method", sa.Text, nullable=False),
                    sa.Column("detail", sa.JSON),
                    sa.Column("detected_at", TS, nullable=False))
    op.create_index("ix_change_points_series", "change_points",
                    ["hardware_fingerprint", "setting_id", "metric"])


def _fill_setting_ids() -> None:
    """Every existing row gets the setting id its cell would have today."""
    results = sa.table("results", sa.column("id", sa.Integer), sa.column("arch", sa.String),
                       sa.column("arch_config", sa.JSON), sa.column("task", sa.String),
                       sa.column("task_config", sa.JSON), sa.column("device", sa.String),
                       sa.column("dtype", sa.String), sa.column("threads", sa.Integer),
                       sa.column("setting_id", sa.String))
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(sa.select(results).where(results.c.id > last)
                            .order_by(results.c.id).limit(CHUNK)).mappings().all()
        if not rows:
            return
        bind.execute(results.update().where(results.c.id == sa.bindparam("rid"))
                     .values(setting_id=sa.bindparam("sid")),
                     [{"rid": r["id"], "sid": setting_id(dict(r))} for r in rows])
        last = rows[-1]["id"]


def downgrade() -> None:
    raise NotImplementedError("archbench migrations go forward only; restore a backup")
