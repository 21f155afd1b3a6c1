"""The code location loads, is light to import, and every asset is described for the UI."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from deer_reid_assets.definitions import ALL_ASSETS, ALL_CHECKS, REVIEW_ASSETS, UPLOAD_ASSETS, defs

GPU_ASSETS = {"detections", "baseline_embeddings", "multiscale_embeddings", "efficientnet_embeddings",
              "finetuned_reid_model", "finetuned_embeddings", "antler_detector", "antler_features", "upload_assignments"}


def test_definitions_load_and_every_asset_is_described():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"camera_images", "detections", "crops", "baseline_embeddings", "multiscale_embeddings",
                    "efficientnet_embeddings", "published_embeddings", "ensemble_weights", "deer_profiles",
                    "deer_assignments", "reid_evaluation", "embedding_report", "triplet_dataset",
                    "finetuned_reid_model", "finetuned_embeddings", "review_labels", "antler_annotations",
                    "antler_detector", "antler_features", "physical_features", "upload_assignments"}
    for asset in ALL_ASSETS + UPLOAD_ASSETS + REVIEW_ASSETS:
        spec = next(iter(asset.specs))
        name = spec.key.to_user_string()
        assert spec.group_name and spec.group_name != "default", name
        assert spec.kinds, name
        assert spec.owners == ["team:deer-reid"], name
        assert spec.description and len(spec.description) > 40, name
        assert spec.code_version, name
        pool = asset.op.pool
        assert (pool == "gpu") == (name in GPU_ASSETS), f"{name}: pool {pool}"


def test_embeddings_are_audited_by_blocking_checks_and_recompute_automatically():
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {(n, "audit") for n in ("baseline_embeddings", "multiscale_embeddings", "efficientnet_embeddings",
                                             "finetuned_embeddings")}
    for checks_def in ALL_CHECKS:
        assert all(spec.blocking for spec in checks_def.check_specs)
    for asset in ALL_ASSETS:
        name = asset.key.to_user_string()
        condition = graph.get(asset.key).automation_condition
        # uploads come from the sensor; training is launched on purpose (it takes hours on a CPU)
        assert (condition is None) == (name in {"camera_images", "triplet_dataset", "finetuned_reid_model",
                                                 "antler_detector"}), name
    sensor = defs.resolve_sensor_def("deer_reid_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_lineage_runs_from_photos_to_evaluation():
    graph = defs.resolve_asset_graph()
    upstream = graph.get(dg.AssetKey("reid_evaluation")).parent_keys
    assert dg.AssetKey("deer_assignments") in upstream
    chain = ["camera_images", "detections", "crops", "baseline_embeddings", "published_embeddings", "deer_profiles",
             "deer_assignments"]
    for parent, child in zip(chain, chain[1:]):
        assert dg.AssetKey(parent) in graph.get(dg.AssetKey(child)).parent_keys


def test_loading_the_code_location_does_not_import_torch():
    code = ("import sys, deer_reid_assets.definitions as d; d.defs.resolve_asset_graph(); "
            "print(sorted(m for m in ('torch', 'torchvision', 'ultralytics', 'efficientnet_pytorch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_plain_dagster_commands_work_whether_or_not_the_server_runs(empty_db_url, tmp_path, monkeypatch):
    """Issue 12: `db start`/`demo`/`serve` wrote DAGSTER_HOME and DAGSTER_PG_URL into .env; once the
    embedded server stopped, `dagster definitions validate -w workspace.yaml` failed after retries.
    Now .env carries no Dagster instance, and the repository's dagster.yaml needs no server."""
    import os
    import shutil

    from deer_reid_assets.defs.instance import REPO_ROOT, forget_stale_instance, prepare_dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))  # restored after the test
    monkeypatch.setenv("DAGSTER_PG_URL", "unused")
    prepare_dagster_home(empty_db_url, env_file=tmp_path / ".env")
    assert "DAGSTER" not in (tmp_path / ".env").read_text()
    stale = tmp_path / "stale.env"  # what earlier versions left behind, pointing at a stopped server
    stale.write_text(f"DAGSTER_HOME={tmp_path / 'home'}\nDAGSTER_PG_URL=postgresql+psycopg2://x@/dagster?host=/gone\n"
                     "DEER_REID_HOME=/somewhere\n")
    assert forget_stale_instance(stale) and stale.read_text() == "DEER_REID_HOME=/somewhere\n"
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copyfile(REPO_ROOT / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "All code locations passed validation" in done.stderr + done.stdout, done.stderr[-2000:]
