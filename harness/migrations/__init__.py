"""Alembic migrations of the archbench database (applied by ``archbench db upgrade``)."""
