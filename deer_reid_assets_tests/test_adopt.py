"""Adopting the existing system's database (`db migrate --adopt`), baselines verified at every level,
and migrations that could escape their transaction refused before they run."""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa

from deer_reid_assets.core.store import adopt, db, migrations, shapes
from deer_reid_assets_tests import existing_system


@pytest.fixture
def their_db(empty_db_url, tmp_path):
    """The existing system's database with its kind of rows (photos under tmp_path/photos)."""
    engine = db.make_engine(empty_db_url)
    existing_system.build_schema(engine)
    counts = existing_system.populate(engine, tmp_path / "photos")
    yield engine, counts
    engine.dispose()


def _recorded(engine) -> dict:
    with engine.connect() as conn:
        return migrations.applied(conn)


def test_adopt_dry_run_then_real_then_a_second_run_that_does_nothing(their_db):
    engine, counts = their_db
    assert counts["auto"] and counts["reviewed"] and counts["manual"] and counts["duplicates"]
    assert counts["age_classes"] and counts["bursts"] and counts["keypoints"]
    before = existing_system.fingerprint(engine)

    plan = adopt.adopt(engine, dry_run=True)
    actions = {s.version: s.action for s in plan}
    theirs = [f"{i:03d}" for i in range(1, 13)] + ["020", "021"]
    assert all(actions[v] == "record" for v in theirs)
    ours = [m.version for m in migrations.discover() if m.version not in theirs]
    assert {"013", "018", "022", "023", "024"} <= set(ours)
    assert [v for v, a in actions.items() if a == "apply"] == ours
    index_note = next(s for s in plan if s.version == "003").detail
    assert "idx_images_processing_status" in index_note and "another name" in index_note
    with engine.connect() as conn:  # a dry run changes nothing, not even the history table
        assert conn.execute(sa.text("SELECT to_regclass('reid_schema_migrations')")).scalar() is None
        assert conn.execute(sa.text("SELECT to_regclass('reid_crops')")).scalar() is None

    assert [(s.version, s.action) for s in adopt.adopt(engine)] == [(s.version, s.action) for s in plan]
    recorded = _recorded(engine)
    assert sorted(recorded) == [m.version for m in migrations.discover()]
    assert all(recorded[v][2] for v in theirs) and not any(recorded[v][2] for v in ("013", "018"))
    assert existing_system.fingerprint(engine) == before  # nothing of theirs changed
    with engine.connect() as conn:  # its worker keeps live matching until `deer-reid cutover`
        assert conn.execute(sa.text("SELECT owner FROM reid_live_matching")).scalar() == "existing_system"

    again = adopt.adopt(engine)
    assert {s.action for s in again} == {"already recorded"}
    assert migrations.migrate(engine) == []
    assert existing_system.fingerprint(engine) == before


def test_adopt_applies_their_later_levels_when_missing(their_db):
    engine, _ = their_db
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE antler_processing_log")
    actions = {s.version: s.action for s in adopt.adopt(engine)}
    assert actions["020"] == "record" and actions["021"] == "apply"
    with engine.connect() as conn:  # our 021 back-fills the log from the keypoints already there
        assert conn.execute(sa.text("SELECT count(*) FROM antler_processing_log")).scalar() == \
            conn.execute(sa.text("SELECT count(DISTINCT detection_id) FROM antler_keypoints")).scalar()


def test_adopt_refuses_a_shape_it_does_not_know_and_says_what_differs(their_db):
    engine, _ = their_db
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE deer ALTER COLUMN species TYPE VARCHAR(50)")
        conn.exec_driver_sql("ALTER TABLE detections DROP COLUMN correction_notes")
    with pytest.raises(migrations.MigrationError) as err:
        adopt.adopt(engine, dry_run=True)
    message = str(err.value)
    assert "002_add_deer_status differs: column deer.species is character varying(50), " \
           "expected character varying(100)" in message
    assert "009_add_detection_corrections differs: missing column detections.correction_notes" in message
    with pytest.raises(migrations.MigrationError):
        adopt.adopt(engine)
    assert _recorded(engine) == {}


def test_adopt_refuses_a_database_that_is_not_theirs(empty_db_url):
    engine = db.make_engine(empty_db_url)
    with pytest.raises(migrations.MigrationError, match=r"001_initial_schema is not there \(missing .*table deer"):
        adopt.adopt(engine)


def test_baseline_is_verified_at_every_level(empty_db_url):
    """`--baseline 002` on a database that only has level 001 records nothing and says what is missing."""
    engine = db.make_engine(empty_db_url)
    files = migrations.discover()
    with engine.begin() as conn:
        conn.exec_driver_sql(files[0].sql)
    missing = r"002_add_deer_status: missing type deerstatus; missing column deer.created_at"
    with pytest.raises(migrations.MigrationError, match=missing):
        migrations.migrate(engine, baseline="002")
    assert _recorded(engine) == {}
    assert migrations.migrate(engine, baseline="001")[0] == "002_add_deer_status"


def test_baseline_011_on_a_database_that_already_has_012_points_to_adopt(their_db):
    engine, _ = their_db
    with pytest.raises(migrations.MigrationError, match=r"already has .*012_add_reid_enhancement.*--adopt"):
        migrations.migrate(engine, baseline="011")
    assert _recorded(engine) == {}


def test_this_projects_migrations_never_change_or_drop_the_existing_systems_objects(engine):
    """Every object the existing system's levels make is still there, unchanged, after all of ours."""
    files = migrations.discover()
    with engine.connect() as conn:
        final = shapes.catalog(conn, "public")
        level_shapes = shapes.probe_shapes(conn, files)
        conn.rollback()
    theirs = {k: v for m in files if m.version in migrations.EXISTING_SYSTEM_LEVELS
              for k, v in level_shapes[m.version].items()}
    assert len(theirs) > 100
    assert {k: final.get(k) for k in theirs} == theirs
    owners: dict = {}
    for m in files:  # every object belongs to exactly one level (what adoption relies on)
        for key in level_shapes[m.version]:
            assert key not in owners, f"{key} made by {owners.get(key)} and changed by {m.name}"
            owners[key] = m.name


@pytest.mark.parametrize("statement", ["COMMIT;", "commit", "BEGIN;", "ROLLBACK;", "END;",
                                       "CREATE INDEX CONCURRENTLY ix ON t (a);", "VACUUM t;", "\\d detections"])
def test_a_migration_that_would_escape_its_transaction_is_refused_before_running(engine, tmp_path, statement):
    copy = tmp_path / "migrations"
    shutil.copytree(migrations.default_migrations_dir(), copy)
    n = len(list(copy.glob("*.sql"))) + 1
    (copy / f"{n:03d}_escapes.sql").write_text(f"CREATE TABLE escaped (id int);\n{statement}\n")
    with pytest.raises(migrations.MigrationError, match="escapes contains statements that would break its transaction"):
        migrations.migrate(engine, directory=copy)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('escaped')")).scalar() is None


def test_transaction_words_inside_bodies_strings_and_comments_are_not_refused():
    sql = """-- COMMIT in a comment
    DO $$ BEGIN RAISE NOTICE 'x'; END $$;
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;
    COMMENT ON TABLE t IS 'ROLLBACK; BEGIN'; /* COMMIT; */ SELECT 'it''s; COMMIT';"""
    assert migrations.transaction_breakers(sql) == []
    assert migrations.transaction_breakers("SELECT 1;\n  commit ;") == ["commit"]


def test_adopt_and_cutover_from_the_command_line(their_db, reid_home):
    from click.testing import CliRunner

    from deer_reid_assets.cli import main

    engine, _ = their_db
    env = {"DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    run = lambda *args: CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)  # noqa: E731
    dry = run("db", "migrate", "--adopt", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would 001_initial_schema: record (found by shape)" in dry.output and "nothing was changed" in dry.output
    assert _recorded(engine) == {}
    real = run("db", "migrate", "--adopt")
    ours = len(migrations.discover()) - 14  # the existing system's 001-012, 020 and 021 are recorded, not run
    assert real.exit_code == 0 and f"done: 14 recorded as already there, {ours} applied" in real.output
    assert "database is up to date" in run("db", "migrate", "--adopt").output
    undo = run("cutover", "--undo")
    assert undo.exit_code == 1 and undo.output.strip() == "deer-reid: there is no cut-over to undo"
    cut = run("cutover")
    assert cut.exit_code == 0 and "automatic assignment(s) of the worker left as they are" in cut.output
    assert "given back their previous deer" in run("cutover", "--undo").output
