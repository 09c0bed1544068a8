"""The models and the migrations never disagree, on either engine."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import app.models  # noqa: F401


async def test_autogenerate_finds_no_difference(db):
    def diff(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)

    async with db.engine.connect() as connection:
        changes = await connection.run_sync(diff)
    assert changes == []


def test_downgrade_then_upgrade_round_trips(database_url, tmp_path, engine_name):
    import subprocess
    import sys

    if engine_name != "sqlite":
        # Tearing down the shared PostgreSQL database would break the tests after this one.
        url = database_url
        from tests import pg
        from tests.conftest import _postgres

        url = pg.create_database(_postgres())
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'roundtrip.db'}"
    env = {"COOPSYNC_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    for step in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        out = subprocess.run([sys.executable, "-m", "alembic", *step], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
