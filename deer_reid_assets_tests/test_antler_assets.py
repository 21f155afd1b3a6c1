"""`deer-reid antlers import|export|config` and the antler assets in real Dagster runs."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import sqlalchemy as sa
from click.testing import CliRunner
from PIL import Image

from deer_reid_assets.cli import main
from deer_reid_assets.core.antlers import labelstudio, layout
from deer_reid_assets.core.antlers.annotations import AnnotatedImage, Annotation, RelPoint
from deer_reid_assets.defs.antlers import antler_detector, antler_features
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource

from .test_matching import add_detection


def _stored_photos(engine, tmp_path, n: int = 4) -> list[AnnotatedImage]:
    """n photos with one buck detection each (box 16,12 32x24 of 64x48) and their annotations."""
    rng = np.random.default_rng(1)
    (tmp_path / "photos").mkdir()
    images = []
    with engine.begin() as conn:
        for k in range(n):
            det = add_detection(conn, "buck")
            path = tmp_path / "photos" / f"cam_{k}.jpg"
            Image.fromarray((rng.random((48, 64, 3)) * 255).astype("uint8")).save(path)
            conn.execute(sa.text("UPDATE images SET filename = :f, path = :p WHERE id = "
                                 "(SELECT image_id FROM detections WHERE id = :d)"),
                         {"f": path.name, "p": str(path), "d": det})
            conn.execute(sa.text("UPDATE detections SET bbox = CAST(:b AS json) WHERE id = :d"),
                         {"b": json.dumps({"x": 16, "y": 12, "width": 32, "height": 24}), "d": det})
            pts = [RelPoint(i, 0.3 + 0.025 * i, 0.3 + 0.01 * (i % 8)) for i in range(layout.N_KEYPOINTS)]
            images.append(AnnotatedImage(f"9f1c2e-{path.name}", [Annotation("buck", (0.5, 0.5, 0.5, 0.5), pts)],
                                         width=64, height=48))
    return images


def test_cli_imports_a_label_studio_export_reports_bad_files_and_exports(engine, tmp_path, reid_home):
    images = _stored_photos(engine, tmp_path, n=2)
    export = tmp_path / "export"
    export.mkdir()
    (export / "project-1.json").write_text(json.dumps(labelstudio.to_tasks(images, "/data/upload/1/")))
    (export / "broken.json").write_text("[{")
    env = {"DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    runner = CliRunner()

    result = runner.invoke(main, ["antlers", "import", str(export), "--format", "label-studio"], env=env)

    assert result.exit_code == 0, result.output
    assert "2 photos matched, keypoints of 2 buck detections written (32 points)" in result.output
    assert "1 not imported" in result.output and "broken.json: not a Label Studio JSON export" in result.output
    out = runner.invoke(main, ["antlers", "export", str(tmp_path / "yolo"), "--format", "yolo"], env=env)
    assert out.exit_code == 0 and "2 photos exported" in out.output
    assert (tmp_path / "yolo" / "data.yaml").is_file()
    config = runner.invoke(main, ["antlers", "config"])
    assert config.output == labelstudio.labeling_config()
    bad = runner.invoke(main, ["antlers", "import", str(export / "broken.json"), "--format", "yolo"], env=env)
    assert bad.exit_code == 1 and bad.output.startswith("deer-reid: ") and len(bad.output.strip().splitlines()) == 1


def test_antler_detector_and_features_materialize(engine, tmp_path, reid_home):
    from deer_reid_assets.core.antlers.transfer import import_annotations

    export = tmp_path / "ls.json"
    annotated = _stored_photos(engine, tmp_path, n=5)
    export.write_text(json.dumps(labelstudio.to_tasks(annotated[:4])))  # the fifth buck: no person's points
    assert import_annotations(engine, export, "label-studio").detections_written == 4
    resources = {"database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
                 "image_store": ImageStoreResource(root=str(tmp_path / "store")),
                 "compute": ComputeResource(device="cpu")}

    result = dg.materialize([antler_detector, antler_features], resources=resources,
                            instance=dg.DagsterInstance.ephemeral())

    assert result.success
    meta = result.asset_materializations_for_node("antler_detector")[0].metadata
    assert meta["model_version"].value.startswith("ap-") and meta["profile"].value == "cpu"
    assert "NOT pretrained" in meta["started_from"].value
    assert meta["train_photos"].value + meta["val_photos"].value == 4 and meta["val_photos"].value >= 1
    assert 0.0 <= meta["pose_mAP50-95"].value <= 1.0
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT version, pretrained, metrics FROM reid_antler_models")).one()
    assert row.version == meta["model_version"].value and row.pretrained is False and "box_mAP50" in row.metrics
    features = result.asset_materializations_for_node("antler_features")[0].metadata
    # the new model ran on the one buck no person annotated, and only on him
    predicted = features["predictions"].value
    assert predicted.startswith(f"model {row.version} (random init, NOT pretrained): ") and "of 1 buck" in predicted
    with engine.connect() as conn:
        sources = [r[0] for r in conn.execute(sa.text(
            "SELECT model_version FROM antler_processing_log ORDER BY model_version"))]
    assert sources == ["annotation:label-studio"] * 4 + [row.version]
    assert features["buck_detections_with_keypoints"].value >= 4
    assert features["confidently_counted"].value >= 4  # every point annotated: both beams seen
