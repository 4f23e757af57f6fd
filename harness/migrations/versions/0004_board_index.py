"""Schema 4: an index that the site's reads walk instead of the table.

``ix_results_board`` on (machine, setting, metric, seed, status, run, id, value, CI) covers
the grouping of ``queries.board_rows`` (the newest row per setting, metric and seed) and of
``queries.history_points`` (a point per run): on 100,000 rows a scan of the narrow index
instead of the table halves their time.
Rows stored before ``db.store`` filled in setting ids for callers that left them out (schema 3
filled in every older row) are filled in here too.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from harness.ids import setting_id

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

def upgrade() -> None:
    """Fill in setting ids a caller left out, then build the index."""
    results = sa.table("results", sa.column("id", sa.Integer), sa.column("arch", sa.String),
                       sa.column("arch_config", sa.JSON), sa.column("task", sa.String),
                       sa.column("task_config", sa.JSON), sa.column("device", sa.String),
                       sa.column("dtype", sa.String), sa.column("threads", sa.Integer),
                       sa.column("setting_id", sa.String))
    bind = op.get_bind()
    missing = bind.execute(sa.select(results).where(results.c.setting_id.is_(None)))
    for row in missing.mappings().all():
        bind.execute(results.update().where(results.c.id == row["id"])
                     .values(setting_id=setting_id(dict(row))))
    op.create_index("ix_results_board", "results",
                    ["hardware_fingerprint", "setting_id", "metric", "seed", "status", "run_id",
                     "id", "value", "ci_low", "ci_high"])


def downgrade() -> None:
    raise NotImplementedError("archbench migrations go forward only; restore a backup")
