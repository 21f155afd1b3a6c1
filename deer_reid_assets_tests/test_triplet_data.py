"""The training manifest: the evaluation split's test queries left out, its val queries the model's
validation, the rest training; stored and versioned in the database."""

import pytest
import sqlalchemy as sa

from deer_reid_assets.core.reid import triplet_data
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset
from deer_reid_assets_tests.helpers import run_pipeline


@pytest.fixture
def labelled_world(engine, tmp_path):
    generate_dataset(tmp_path / "data", SyntheticConfig(n_images=50, n_bucks=5, n_does=3, seed=4,
                                                        labelled_fraction=0.8))
    assert run_pipeline({
        "database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
        "image_store": ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(tmp_path / "data")),
        "compute": ComputeResource(device="cpu", batch_size=16),
        "model_weights": ModelWeightsResource(weights="random", seed=0, image_size=48),
    }).success
    return engine


def test_manifest_follows_the_evaluation_split(labelled_world):
    engine = labelled_world
    manifest = triplet_data.build_manifest(engine, seed=0)
    ids = [i["detection_id"] for i in manifest.items]
    assert len(ids) == len(set(ids)) > 0  # no detection in two splits
    with engine.connect() as conn:
        roles = dict(conn.execute(sa.text("SELECT detection_id::text, role FROM reid_eval_splits")).all())
        labelled = set(conn.execute(sa.text(
            "SELECT id::text FROM detections WHERE is_reviewed AND deer_id IS NOT NULL")).scalars())
        stored = dict(conn.execute(sa.text("SELECT detection_id::text, split FROM reid_training_items WHERE version = :v"),
                                   {"v": manifest.version}).all())
    test_queries = {d for d, r in roles.items() if r == "test_query"}
    assert test_queries and not set(ids) & test_queries  # the report's queries are never trained or validated on
    assert set(ids) == labelled - test_queries
    splits = {i["detection_id"]: i["split"] for i in manifest.items}
    expected = {"val_query": "val", "gallery": "train"}
    assert {d: expected[roles[d]] for d in splits} == splits  # the evaluation's val queries validate
    assert stored == splits
    counts = manifest.stats["detections"]
    assert sum(counts.values()) == len(ids) and counts["train"] > counts["val"] > 0 and counts["test"] == 0
    assert sum(manifest.stats["detections_per_identity_histogram"].values()) == manifest.stats["identities"]
    # without the evaluation split: the seeded 80/10/10 hash split of every labelled detection
    plain = triplet_data.build_manifest(engine, seed=0, exclude_eval_queries=False)
    assert {i["detection_id"] for i in plain.items} == labelled and plain.version != manifest.version
    assert plain.stats["detections"]["train"] > plain.stats["detections"]["test"] > 0
    # same labels, same seed: the same version; another seed: another version, stored beside it
    assert triplet_data.build_manifest(engine, seed=0).version == manifest.version
    other = triplet_data.build_manifest(engine, seed=1, exclude_eval_queries=False)
    assert other.version != manifest.version
    assert triplet_data.load_manifest(engine, manifest.version).split("train") == manifest.split("train")


def test_held_out_identities_go_whole_into_test(labelled_world):
    manifest = triplet_data.build_manifest(labelled_world, seed=0, held_out_identity_fraction=0.3)
    by_identity: dict[str, set[str]] = {}
    for item in manifest.items:
        by_identity.setdefault(item["identity"], set()).add(item["split"])
    only_test = [i for i, splits in by_identity.items() if splits == {"test"}]
    assert only_test, "some identity should be held out whole"
    with pytest.raises(ValueError, match="fractions"):
        triplet_data.build_manifest(labelled_world, fractions=(0.5, 0.5, 0.5))
