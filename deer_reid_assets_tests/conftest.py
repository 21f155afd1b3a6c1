"""Shared fixtures: one real embedded PostgreSQL (pgvector) for the whole session, a fresh
database per test that needs one."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from deer_reid_assets.core.store import db, migrations


@pytest.fixture(scope="session")
def pg_server() -> str:
    """URL (database ``postgres``) of an embedded PostgreSQL started on a temporary directory.

    The directory is made outside pytest's basetemp: as root, the server runs as the `pgserver`
    user, and pytest keeps resetting its own folders to mode 0700."""
    home = Path(tempfile.mkdtemp(prefix="deer_reid_test_pg_"))
    server = db.EmbeddedPostgres(home)
    server.start()
    url = server.url("postgres")
    assert url is not None
    yield url
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def _create_database(server_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    db.ensure_database(server_url, name)
    return db.with_database(server_url, name)


@pytest.fixture
def empty_db_url(pg_server) -> str:
    """A new, empty database (no migrations)."""
    return _create_database(pg_server)


@pytest.fixture
def engine(empty_db_url):
    """An engine on a new database with every migration applied."""
    eng = db.make_engine(empty_db_url)
    migrations.migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def reid_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DEER_REID_HOME", str(home))
    return home

