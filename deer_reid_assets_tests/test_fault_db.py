"""Fault suite, database: a PostgreSQL restart in the middle of embedding and of matching, and two of
every write command at once. A tiny world (12 labelled crops of 4 deer, 6 unlabelled photos, ResNet50
with seeded random weights at 32 px) keeps each case to seconds."""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from PIL import Image

from deer_reid_assets.cli import main
from deer_reid_assets.core import errors, families, matching
from deer_reid_assets.core.embed import versions
from deer_reid_assets.core.ingest import crops
from deer_reid_assets.core.ingest.importer import import_crop_folders, import_sidecar_folder
from deer_reid_assets.core.store import db, migrations

pytestmark = pytest.mark.fault
SETTINGS = families.EmbedderSettings(weights="random", image_size=32, batch_size=4)
EMBED = ["embed", "--model", "resnet50", "--weights", "random", "--image-size", "32", "--chunk", "4",
         "--batch-size", "4", "--projection-sample", "8"]


@pytest.fixture(scope="module")
def own_server():
    """A PostgreSQL of this module's own, so restarting it disturbs no other test."""
    home = Path(tempfile.mkdtemp(prefix="deer_reid_fault_pg_"))
    server = db.EmbeddedPostgres(home)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def _photo(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _world(url: str, tmp_path: Path) -> sa.Engine:
    engine = db.make_engine(url)
    migrations.migrate(engine)
    for d in range(4):
        for k in range(3):
            _photo(tmp_path / "crops" / f"Deer-{d}" / f"{k}.png", 10 * d + k)
    import_crop_folders(engine, tmp_path / "crops", sex="doe")
    box = {"x": 2, "y": 2, "width": 36, "height": 36}
    images = []
    for i in range(6):
        _photo(tmp_path / "photos" / f"p{i}.png", 100 + i)
        images.append({"file": f"p{i}.png", "detections": [{"bbox": box, "classification": "doe"}]})
    import json
    (tmp_path / "photos" / "detections.json").write_text(json.dumps({"format": "deer-reid-detections/1", "images": images}))
    import_sidecar_folder(engine, tmp_path / "photos")
    crops.make_crops(engine, tmp_path / "store")
    return engine


@pytest.fixture
def world(own_server, tmp_path):
    url = db.with_database(own_server.url("postgres"), f"f_{uuid.uuid4().hex[:10]}")
    db.ensure_database(own_server.url("postgres"), sa.engine.make_url(url).database)
    engine = _world(url, tmp_path)
    yield engine, url
    engine.dispose()


def _cli_env(url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment; the Dagster variables it sets are listed so CliRunner restores them."""
    return {"DATABASE_URL": url, "DEER_REID_HOME": str(tmp_path / "home"),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"), "DAGSTER_PG_URL": ""}


def _restart(server: db.EmbeddedPostgres) -> None:
    server.stop()
    server.start()


def _count(engine, sql: str, **params) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _embed_and_publish(engine, tmp_path) -> str:
    report = versions.embed_crops(engine, families.get("resnet50").embedder(None, SETTINGS), artifacts=tmp_path / "art",
                                  sample_size=8, chunk=4)
    versions.record_audit(engine, report.version, True, {"passed": True})
    versions.publish(engine, report.version)
    matching.rebuild_profiles(engine)
    return report.version


def test_database_restart_mid_embedding_one_line_then_the_rerun_resumes(world, own_server, tmp_path, monkeypatch):
    engine, url = world
    env = _cli_env(url, tmp_path)
    real, calls = versions._write_vectors, [0]

    def restart_then_write(conn, *args):
        calls[0] += 1
        if calls[0] == 2:  # the projection's sample is in; the first chunk's transaction is open
            _restart(own_server)
        return real(conn, *args)

    monkeypatch.setattr(versions, "_write_vectors", restart_then_write)
    first = CliRunner().invoke(main, EMBED, env=env)
    assert first.exit_code == errors.EXIT_CONNECTION_LOST, first.output
    lines = [line for line in first.output.splitlines() if line.startswith("deer-reid:")]
    assert len(lines) == 1 and "lost the database connection" in lines[0] and "Traceback" not in first.output
    monkeypatch.setattr(versions, "_write_vectors", real)
    total = _count(engine, "SELECT count(*) FROM reid_crops WHERE status = 'ok'")
    written = _count(engine, "SELECT count(*) FROM reid_embeddings")
    assert 0 < written < total  # the sample committed, the interrupted chunk rolled back
    again = CliRunner().invoke(main, EMBED, env=env)
    assert again.exit_code == 0, again.output
    assert "resumed" in again.output and f"{total - written} new vectors" in again.output
    assert _count(engine, "SELECT count(*) FROM reid_embeddings") == total
    assert _count(engine, "SELECT count(*) FROM reid_published_embeddings") == 1


def test_database_restart_mid_matching_changes_nothing_then_the_rerun_matches(world, own_server, tmp_path, monkeypatch):
    engine, _ = world
    version = _embed_and_publish(engine, tmp_path)
    with engine.connect() as conn:
        before = dict(conn.execute(sa.text("SELECT id::text, deer_id::text FROM detections")).all())
    real = matching.refresh_sighting_stats

    def restart_then_refresh(conn):
        _restart(own_server)  # every write of the run is done, the transaction not yet committed
        return real(conn)

    monkeypatch.setattr(matching, "refresh_sighting_stats", restart_then_refresh)
    with pytest.raises(sa.exc.DBAPIError) as info:
        matching.assign_detections(engine, version, threshold=0.0)
    assert errors.describe(info.value)[1] == errors.EXIT_CONNECTION_LOST
    with engine.connect() as conn:
        assert dict(conn.execute(sa.text("SELECT id::text, deer_id::text FROM detections")).all()) == before
    assert _count(engine, "SELECT count(*) FROM reid_assignment_runs") == 0
    monkeypatch.setattr(matching, "refresh_sighting_stats", real)
    report = matching.assign_detections(engine, version, threshold=0.0)
    assert report.considered == 6 and _count(engine, "SELECT count(*) FROM reid_assignment_runs") == 1
    assert _count(engine, "SELECT count(*) FROM reid_assignment_log") == 6
    assert _count(engine, "SELECT count(*) FROM detections WHERE deer_id IS NOT NULL AND NOT is_reviewed") == report.assigned


def _at_once(*calls):
    """Run the callables in threads started together; returns their results (exceptions re-raised)."""
    results, errors_seen = [None] * len(calls), []
    barrier = threading.Barrier(len(calls))

    def run(i, fn):
        try:
            barrier.wait()
            results[i] = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below
            errors_seen.append(exc)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    if errors_seen:
        raise errors_seen[0]
    return results


def test_two_of_every_write_command_at_once(world, tmp_path):
    engine, url = world
    # import the same folder twice at once: every photo once (import-crops: test_bad_items.py)
    for i in range(8):
        _photo(tmp_path / "more" / "cam09" / f"m{i}.png", 500 + i)
    a, b = _at_once(lambda: import_sidecar_folder(engine, tmp_path / "more"),
                    lambda: import_sidecar_folder(engine, tmp_path / "more"))
    assert a.images_new + b.images_new == 8 and a.images_failed == b.images_failed == 0
    assert _count(engine, "SELECT count(*) FROM images WHERE path LIKE :p", p=f"{tmp_path / 'more'}%") == 8
    assert _count(engine, "SELECT count(*) FROM locations WHERE name = 'cam09'") == 1
    crops.make_crops(engine, tmp_path / "store")
    # embed one family twice at once: the second waits its turn, then finds the work done
    emb = lambda: versions.embed_crops(engine, families.get("resnet50").embedder(None, SETTINGS),  # noqa: E731
                                       artifacts=tmp_path / "art", sample_size=8, chunk=4)
    first, second = _at_once(emb, emb)
    assert first.version == second.version and first.new_vectors + second.new_vectors == first.total_vectors
    total = _count(engine, "SELECT count(*) FROM reid_crops WHERE status = 'ok'")
    assert _count(engine, "SELECT count(*) FROM reid_embeddings") == total
    # ... and the CLI's `embed` does not wait: a one-line 'busy' error, exit 4
    with versions.family_lock(engine, "resnet50"):
        busy = CliRunner().invoke(main, EMBED, env=_cli_env(url, tmp_path))
    assert busy.exit_code == errors.EXIT_BUSY and "another run is embedding resnet50" in busy.output
    # publish / rollback twice at once
    versions.record_audit(engine, first.version, True, {"passed": True})
    _at_once(lambda: versions.publish(engine, first.version), lambda: versions.publish(engine, first.version))
    assert _count(engine, "SELECT count(*) FROM reid_published_embeddings") == 1
    _at_once(lambda: matching.rebuild_profiles(engine), lambda: matching.rebuild_profiles(engine))
    # match twice at once: both runs complete, one after the other; the detections hold the later one's answer
    r1, r2 = _at_once(lambda: matching.assign_detections(engine, first.version, threshold=0.0),
                      lambda: matching.assign_detections(engine, first.version, threshold=0.0))
    assert r1.considered == r2.considered == 6  # the unlabelled detections (the new photos have none)
    with engine.connect() as conn:
        last = conn.execute(sa.text("SELECT run_id FROM reid_assignment_runs ORDER BY created_at DESC LIMIT 1")).scalar()
        stale = conn.execute(sa.text(
            "SELECT count(*) FROM reid_assignment_log l JOIN detections d ON d.id = l.detection_id "
            "WHERE l.run_id = :r AND d.deer_id IS DISTINCT FROM l.new_deer_id"), {"r": last}).scalar()
    assert stale == 0
