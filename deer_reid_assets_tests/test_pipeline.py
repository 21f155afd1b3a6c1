"""The whole asset graph on a tiny synthetic data set, against the real embedded PostgreSQL, with the
evaluation's numbers checked against what the database holds."""

import json

import dagster as dg
import pytest
import sqlalchemy as sa

from deer_reid_assets.core.embed import versions as embeddings
from deer_reid_assets.core.marks import vocabulary as marks_vocabulary
from deer_reid_assets.definitions import ALL_ASSETS, ANTLER_TRAINING, TRAINING_ASSETS
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset
from deer_reid_assets_tests.helpers import run_pipeline


@pytest.fixture
def tiny_world(engine, tmp_path):
    data = tmp_path / "data"
    summary = generate_dataset(data, SyntheticConfig(n_images=30, n_bucks=4, n_does=2, seed=11))
    resources = {
        "database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
        "image_store": ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(data)),
        "compute": ComputeResource(device="cpu", batch_size=16),
        "model_weights": ModelWeightsResource(weights="random", seed=0, image_size=64),
    }
    return summary, resources, tmp_path


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    out = {}
    for event in result.get_asset_materialization_events():
        m = event.event_specific_data.materialization
        out[m.asset_key.to_user_string()] = {k: v.value for k, v in m.metadata.items()}
    return out


def test_whole_graph_materializes_and_the_evaluation_agrees_with_the_database(engine, tiny_world):
    summary, resources, tmp_path = tiny_world
    result = run_pipeline(resources)
    assert result.success
    meta = _metadata(result)
    assert set(meta) == {a.key.to_user_string() for a in ALL_ASSETS if a not in TRAINING_ASSETS + ANTLER_TRAINING}
    # the labelled bucks' antler annotations (the generator's Label Studio export) are imported; no keypoint
    # model is trained without the training assets, so the features come from the annotations alone
    sidecar = json.loads(summary.detections_file.read_text())
    truth = json.loads(summary.ground_truth_file.read_text())["detections"]
    labelled_bucks = sum("label" in d and truth[d["key"]]["sex"] == "buck"
                         for image in sidecar["images"] for d in image["detections"])
    assert labelled_bucks > 0 and meta["antler_annotations"]["not_imported"] == 0
    assert meta["antler_annotations"]["buck_detections_annotated"] == labelled_bucks
    assert meta["antler_features"]["buck_detections_with_keypoints"] == labelled_bucks
    assert meta["antler_features"]["predictions"] == "no keypoint model registered: annotations only"
    assert isinstance(meta["deer_assignments"]["changed_by_antler_constraint"], int)
    accuracy = meta["reid_evaluation"]["antler_point_count_accuracy"]
    assert accuracy["annotations"]["detections"] == labelled_bucks and accuracy["model"]["detections"] == 0
    assert accuracy["annotations"]["left_exact"] == 1.0  # a person's points in view give the true count
    assert meta["reid_evaluation"]["live_buck_misidentification_rate"] is not None

    with engine.connect() as conn:
        q = lambda sql: conn.execute(sa.text(sql)).scalar()  # noqa: E731
        n_detections = q("SELECT count(*) FROM detections")
        assert n_detections == summary.n_detections == meta["camera_images"]["detections_from_sidecar"]
        assert q("SELECT count(*) FROM images") == summary.n_images
        assert q("SELECT count(*) FROM reid_crops WHERE status = 'ok'") == meta["crops"]["total_ok"] == n_detections
        version = embeddings.published_version(conn, "resnet50")
        assert version == meta["baseline_embeddings"]["version"]
        assert q(f"SELECT count(*) FROM reid_embeddings WHERE version = '{version}'") == n_detections
        assert "NOT pretrained" in meta["baseline_embeddings"]["weights"]
        # one ResNet50 pass per crop: the second of the two ResNet50 families took the first one's stages
        shared = [meta[f"{name}_embeddings"]["crops_from_shared_resnet50_pass"] for name in ("baseline", "multiscale")]
        assert sorted(shared) == [0, n_detections]
        assert meta["efficientnet_embeddings"]["crops_from_shared_resnet50_pass"] == 0
        # profiles: one per labelled deer, mirrored on the deer table
        assert q(f"SELECT count(*) FROM reid_deer_profiles WHERE version = '{version}'") == meta["deer_profiles"]["profiles"]
        set_id = meta["deer_profiles"]["deer_embedding_version"]
        assert set_id.startswith("ps-")
        columns = conn.execute(sa.text("SELECT versions FROM reid_profile_sets WHERE id = :i"), {"i": set_id}).scalar()
        assert columns["feature_vector"] == version
        assert set(columns) == {"feature_vector", "feature_vector_multiscale", "feature_vector_efficientnet"}
        assert q(f"""SELECT count(*) FROM deer WHERE embedding_version = '{set_id}' AND feature_vector IS NOT NULL
                     AND feature_vector_multiscale IS NOT NULL AND feature_vector_efficientnet IS NOT NULL""") \
            == meta["deer_profiles"]["profiles"]
        # the tuned ensemble drives the matcher, with the weight ensemble_weights stored
        w = meta["ensemble_weights"]["weight_multiscale"]
        assert meta["deer_assignments"]["method"] == "ensemble"
        used = meta["deer_assignments"]["embedding_versions_and_ensemble_weights"]
        assert used[columns["feature_vector_multiscale"]] == pytest.approx(w)
        # every page with figures names the weights behind them (random here)
        for name in ("deer_assignments", "reid_evaluation", "ensemble_weights", "embedding_report"):
            assert "NOT pretrained" in meta[name]["weights"], name
        assert q("SELECT count(*) FROM reid_ensemble_weights") == 1
        # assignments: the metadata counts are the rows with a deer
        unreviewed = q("SELECT count(*) FROM detections WHERE NOT is_reviewed")
        assigned = q("SELECT count(*) FROM detections WHERE NOT is_reviewed AND deer_id IS NOT NULL")
        assert meta["deer_assignments"]["detections_considered"] == unreviewed
        assert meta["deer_assignments"]["assigned"] == assigned
        assert meta["reid_evaluation"]["live_assignment_rate"] == f"{100 * assigned / unreviewed:.3g}%"  # a rate
        matched = q("SELECT count(*) FROM reid_similarity_scores WHERE matched")
        assert matched == assigned
        wrong = q("""SELECT count(*) FROM detections d JOIN reid_ground_truth g ON g.detection_id = d.id
                     JOIN deer r ON r.id = d.deer_id WHERE NOT d.is_reviewed AND r.name <> g.identity""")
        fmr = meta["reid_evaluation"]["live_false_match_rate"]
        assert fmr == (f"{100 * wrong / assigned:.3g}%" if assigned else "no ground truth")
        stored = q("SELECT count(*) FROM reid_eval_splits")
        assert stored == q("SELECT count(*) FROM reid_ground_truth")
        # physical_features: the hunter's recorded marks (the sides he saw) beside the antlers, and a body size
        hunter = json.loads((summary.root / "marks" / "recorded_marks.json").read_text())["deer"]
        true = {i["name"]: i["marks"] for i in json.loads(summary.ground_truth_file.read_text())["individuals"]}
        assert meta["physical_features"]["deer_with_marks"] == len(hunter) > 0
        assert meta["physical_features"]["marks_imported"].startswith(f"{len(hunter)} deer recorded, 0 unchanged, 0 not")
        features = dict(conn.execute(sa.text("SELECT name, physical_features FROM deer WHERE physical_features ? 'marks'")).all())
        for entry in hunter:
            recorded = {k: v for k, v in entry.items() if k != "name"}
            assert recorded.items() <= true[entry["name"]].items()
            assert marks_vocabulary.from_json(features[entry["name"]]["marks"]) == recorded
        assert all("antlers" in pf for name, pf in features.items() if q(
            f"SELECT antler_points IS NOT NULL FROM deer WHERE name = '{name}'"))
        assert all(pf["body_size"]["source"] == "measured" for pf in features.values())

    report = json.loads((tmp_path / "store" / "reports" / "reid_evaluation.json").read_text())
    test = report["test"]["summary"]
    assert test["n_assigned"] == test["n_correct"] + test["n_wrong"]
    assert test["assignment_rate"] == pytest.approx(test["n_assigned"] / test["n_queries"])
    assert 0.0 <= test["rank1"] <= 1.0 and 0.0 <= test["mAP"] <= 1.0
    assert meta["reid_evaluation"]["test_rank1"] == float(f"{test['rank1']:.3g}")  # 3 significant digits
    assert meta["reid_evaluation"]["plot"].startswith("![")
    # the before/after report: five rows on the same test queries, numbers from the run
    rows = json.loads((tmp_path / "store" / "reports" / "embedding_report.json").read_text())["rows"]
    assert [r["model"] for r in rows][:3] == ["baseline (ResNet50)", "multi-scale ResNet50", "EfficientNet-B0"]
    assert len(rows) == 6 and rows[0]["mean_true_match_similarity_change_pct"] == pytest.approx(0.0)
    assert rows[5]["model"] == rows[4]["model"] + " + antler constraint"  # the tuned ensemble, constrained
    assert rows[5]["assignment_rate"] <= rows[4]["assignment_rate"]  # it only ever removes candidates
    assert "test queries confidently counted" in meta["embedding_report"]["antler_constraint"]
    # computed per model, not copied (the tuned ensemble may equal the 0.6/0.4 one when w = 0.6)
    assert len({round(r["mean_true_match_similarity"], 9) for r in rows[:4]}) == 4
    assert rows[0]["rank1"] == pytest.approx(test["rank1"])  # the baseline row is reid_evaluation's test split


def test_rerun_is_incremental_and_keeps_the_published_version(engine, tiny_world):
    _, resources, _ = tiny_world
    instance = dg.DagsterInstance.ephemeral()
    assert run_pipeline(resources, instance=instance).success
    again = _metadata(run_pipeline(resources, instance=instance))
    assert again["camera_images"]["images_new"] == 0
    assert again["crops"]["new_crops"] == 0
    assert again["baseline_embeddings"]["new_vectors"] == 0
    assert again["baseline_embeddings"]["projection_fitted_now"] is False
    assert "reused_search" in again["ensemble_weights"]  # same versions and labels: no second search
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reid_embedding_versions")).scalar() == 3
        assert conn.execute(sa.text("SELECT count(*) FROM reid_ensemble_weights")).scalar() == 1
