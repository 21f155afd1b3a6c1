"""The `deer-reid` command: real database, one clear line on bad input."""

from click.testing import CliRunner

from deer_reid_assets.cli import main
from deer_reid_assets.core.store import migrations


def _run(args, env=None):
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_migrate_and_status_against_database_url(empty_db_url, reid_home):
    env = {"DATABASE_URL": empty_db_url}
    first = _run(["db", "migrate"], env)
    n = len(migrations.discover())
    assert first.exit_code == 0 and f"applied {n} migration(s)" in first.output
    again = _run(["db", "migrate"], env)
    assert again.exit_code == 0 and "database is up to date" in again.output
    status = _run(["db", "status"], env)
    assert status.exit_code == 0 and f"migrations {n}/{n} applied" in status.output
    assert _run(["db", "url"], env).output.strip() == empty_db_url


def test_unreachable_database_is_one_clear_line(reid_home):
    result = _run(["db", "migrate"], {"DATABASE_URL": "postgresql://deer:secret@127.0.0.1:1/reid"})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deer-reid: cannot connect to the database at")
    assert "secret" not in result.output


def test_wrong_kind_of_url_and_bad_baseline(empty_db_url, reid_home):
    assert "must be a PostgreSQL URL" in _run(["db", "url"], {"DATABASE_URL": "sqlite:///x.db"}).output
    result = _run(["db", "migrate", "--baseline", "011"], {"DATABASE_URL": empty_db_url})
    assert result.exit_code == 1 and "lacks what those migrations create" in result.output


def test_commands_refuse_an_unmigrated_database(empty_db_url, reid_home, tmp_path):
    (tmp_path / "crops" / "Buck-1").mkdir(parents=True)
    result = _run(["import-crops", str(tmp_path / "crops")], {"DATABASE_URL": empty_db_url})
    assert result.exit_code == 1 and "pending migration(s)" in result.output and "deer-reid db migrate" in result.output


def test_embedded_status_when_not_running(reid_home):
    result = _run(["db", "status"], {"DATABASE_URL": ""})
    assert result.exit_code == 1 and "is not running (deer-reid db start)" in result.output


def test_demo_refuses_a_bad_epoch_count_before_doing_anything(reid_home):
    result = _run(["demo", "--epochs", "0"])
    assert result.exit_code == 1
    assert result.output.strip() == "deer-reid demo: --epochs must be at least 1, got 0"
    assert not (reid_home / "demo_data").exists()  # nothing generated, no database started
    result = _run(["demo", "--val-every", "-2"])
    assert result.exit_code == 1 and result.output.strip() == "deer-reid demo: --val-every must be at least 1, got -2"
