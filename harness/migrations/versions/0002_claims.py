"""Schema 2: cell claims, run heartbeats, one finished result per cell and code version.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
log = logging.getLogger("harness.db")


def upgrade() -> None:
    op.create_table("cell_claims",
                    sa.Column("cell_id", sa.String(32), primary_key=True),
                    sa.Column("hardware_fingerprint", sa.String(32), primary_key=True),
                    sa.Column("code_version", sa.String(80), primary_key=True),
                    sa.Column("owner", sa.String(32), nullable=False, index=True),
                    sa.Column("claimed_at", TS, nullable=False),
                    sa.Column("heartbeat_at", TS, nullable=False),
                    sa.Column("expires_at", TS, nullable=False))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("heartbeat_at", TS))
    done = sa.text("status IN ('ok', 'unavailable', 'unsupported')")
    try:
        with op.get_bind().begin_nested():
            op.create_index("ux_results_done", "results",
                            ["cell_id", "hardware_fingerprint", "code_version", "metric"],
                            unique=True, sqlite_where=done, postgresql_where=done)
    except sa.exc.IntegrityError:
        log.warning("this database holds some finished results more than once (from runners "
                    "before schema 2); they are all kept, without the unique index")


def downgrade() -> None:
    op.drop_index("ux_results_done", "results")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
    op.drop_table("cell_claims")
