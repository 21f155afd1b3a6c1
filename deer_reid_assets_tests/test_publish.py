"""Write-audit-publish on real runs: a version that fails its audit is not published and the active
one stays; a rollback restores the previous assignments exactly; a run killed in the middle of a
re-embedding publishes nothing and the next run resumes it."""

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from deer_reid_assets.cli import main
from deer_reid_assets.core.embed import versions as emb_core
from deer_reid_assets.defs import embeddings
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset
from deer_reid_assets_tests.helpers import run_pipeline


def _resources(engine, tmp_path, seed=0):
    return {
        "database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
        "image_store": ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(tmp_path / "data")),
        "compute": ComputeResource(device="cpu", batch_size=16),
        "model_weights": ModelWeightsResource(weights="random", seed=seed, image_size=48),
    }


@pytest.fixture
def world(engine, tmp_path, reid_home):
    generate_dataset(tmp_path / "data", SyntheticConfig(n_images=30, n_bucks=4, n_does=2, seed=9))
    assert run_pipeline(_resources(engine, tmp_path)).success
    return engine, tmp_path


def _published(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT model_family, version FROM reid_published_embeddings")).all())


def _assignments(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT id::text, deer_id::text FROM detections WHERE NOT is_reviewed")).all())


def test_failed_audit_is_not_published_and_the_active_version_stays(world):
    engine, tmp_path = world
    before = _published(engine)
    run = dg.materialize([embeddings.multiscale_embeddings, embeddings.multiscale_audit, embeddings.published_embeddings],
                         resources=_resources(engine, tmp_path, seed=1), raise_on_error=False,
                         run_config={"ops": {"multiscale_embeddings_audit": {"config": {"tolerance": -1.0}}}})
    (check,) = run.get_asset_check_evaluations()
    assert not check.passed and "FAILED" in check.metadata["audit"].value
    # the blocking check skipped the publish step in this run ...
    assert "published_embeddings" not in {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()}
    new = check.metadata["version"].value
    assert new != before["multiscale"] and _published(engine) == before
    # ... and publishing it later, by hand or by the publish asset, is refused
    with pytest.raises(emb_core.EmbeddingError, match="failed its audit"):
        emb_core.publish(engine, new)
    later = dg.materialize([embeddings.published_embeddings], resources=_resources(engine, tmp_path))
    assert "kept: newest failed its audit" in later.get_asset_materialization_events()[0] \
        .event_specific_data.materialization.metadata["publish"].value
    assert _published(engine) == before
    # issue 12: the failed version is marked failed (kept for inspection) and the next run of the same
    # model starts a new version instead of writing into the rejected one forever
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT version, status FROM reid_embedding_versions")).all())
    assert statuses[new] == "failed"
    again = dg.materialize([embeddings.multiscale_embeddings, embeddings.multiscale_audit, embeddings.published_embeddings],
                           resources=_resources(engine, tmp_path, seed=1),
                           run_config={"ops": {"multiscale_embeddings_audit": {"config": {"tolerance": 1.0}}}})
    (check,) = again.get_asset_check_evaluations()
    newer = check.metadata["version"].value
    assert check.passed and newer not in (new, before["multiscale"]) and _published(engine)["multiscale"] == newer
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM reid_embedding_versions WHERE version = :v"), {"v": new}).scalar() \
            == "failed"
    with pytest.raises(emb_core.EmbeddingError, match="failed its audit"):
        emb_core.publish(engine, new)


def test_rollback_restores_previous_assignments_exactly(world):
    engine, tmp_path = world
    first_versions, first = _published(engine), _assignments(engine)
    assert any(first.values())
    run = run_pipeline(_resources(engine, tmp_path, seed=3),
                         run_config={"ops": {f"{n}_audit": {"config": {"tolerance": 1.0}}
                                             for n in ("baseline_embeddings", "multiscale_embeddings",
                                                       "efficientnet_embeddings")}})
    assert run.success
    second_versions = _published(engine)
    assert second_versions["multiscale"] != first_versions["multiscale"]
    assert _assignments(engine) != first
    env = {"DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    for family in ("resnet50", "multiscale", "efficientnet"):
        result = CliRunner().invoke(main, ["embeddings", "rollback", first_versions[family]], env=env,
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert _published(engine) == first_versions
    assert _assignments(engine) == first
    listing = CliRunner().invoke(main, ["embeddings", "list"], env=env).output
    assert first_versions["multiscale"] in listing and second_versions["multiscale"] in listing


def test_a_run_killed_mid_embedding_publishes_nothing_and_resumes(engine, tmp_path, reid_home):
    generate_dataset(tmp_path / "data", SyntheticConfig(n_images=120, n_bucks=4, n_does=2, seed=2))
    resources = _resources(engine, tmp_path)
    from deer_reid_assets.defs.ingest import camera_images, crops, detections

    assert run_pipeline(resources, assets=[camera_images, detections, crops]).success
    url = engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "DATABASE_URL": url, "DEER_REID_HOME": str(reid_home)}
    cmd = [sys.executable, "-m", "deer_reid_assets.cli", "embed", "--model", "efficientnet", "--weights", "random",
           "--image-size", "64", "--chunk", "4", "--batch-size", "4", "--projection-sample", "8"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    count = sa.text("SELECT count(*) FROM reid_embeddings e JOIN reid_embedding_versions v USING (version) "
                    "WHERE v.model_family = 'efficientnet'")
    deadline = time.monotonic() + 120
    with engine.connect() as conn:
        while conn.execute(count).scalar() <= 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)  # 8 = the projection's sample; kill right after the first chunk lands
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with engine.connect() as conn:
        written = conn.execute(count).scalar()
        status = conn.execute(sa.text("SELECT status FROM reid_embedding_versions WHERE model_family = 'efficientnet'")).scalar()
        total = conn.execute(sa.text("SELECT count(*) FROM reid_crops WHERE status = 'ok'")).scalar()
    assert 0 < written < total and status == "staging"
    assert "efficientnet" not in _published(engine)
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and f"{total - written} new vectors" in resumed.stdout
    assert "efficientnet" in _published(engine)
