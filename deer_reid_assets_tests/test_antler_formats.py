"""Annotation files in and out: YOLOv8-pose datasets (the existing system's shape) and Label Studio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deer_reid_assets.core.antlers import labelstudio, layout, yolo
from deer_reid_assets.core.antlers.annotations import AnnotatedImage, Annotation, RelPoint

# Shaped like the existing system's export: absolute path of another machine, names as a mapping,
# keypoint_names, no flip_idx; a buck line with 16 x (x y v), unlabelled points "0 0 0"; does with
# the box only.
USER_YAML = """# Antler Detection Dataset
path: /app/src/models/training_data/antler_yolo_20251116
train: images/train
val: images/val

nc: 3
names:
  0: buck
  1: doe
  2: fawn

kpt_shape: [16, 3]  # 16 keypoints, 3 values each
keypoint_names:
  - left_main_beam
"""


def _buck_line() -> str:
    pts = ["0.6255 0.6014 2", "0.6261 0.5873 2", "0.6206 0.5577 2", "0.6042 0.5611 2", "0.5952 0.5970 2",
           "0 0 0", "0 0 0", "0 0 0", "0.6307 0.6063 2", "0.6310 0.5776 1", "0.6277 0.5655 2", "0.6340 0.5577 2",
           "0 0 0", "0 0 0", "0 0 0", "0 0 0"]
    return "0 0.693360 0.744837 0.210210 0.391051 " + " ".join(pts)


def _user_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "antler_yolo_20251116"
    for split in ("train", "val"):
        (root / "labels" / split).mkdir(parents=True)
    (root / "data.yaml").write_text(USER_YAML)
    (root / "labels" / "train" / "03f83b7f-88b35fca_Jason1_20251010_021121_001.txt").write_text(
        "1 0.358483 0.412741 0.075326 0.096772\n" + _buck_line() + "\n1 0.809727 0.380626 0.022093 0.025596\n")
    (root / "labels" / "val" / "2491db4f_SANCTUARY_11106.txt").write_text("1 0.305492 0.737414 0.595538 0.433638\n")
    (root / "labels" / "val" / "broken.txt").write_text("0 0.5 0.5 0.2\n")
    (root / "labels" / "val" / "badclass.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    return root


def test_reads_the_existing_systems_labels_and_reports_each_bad_file(tmp_path):
    images, errors = yolo.read_dataset(_user_dataset(tmp_path) / "data.yaml")
    assert {e.path.rsplit("/", 1)[-1] for e in errors} == {"broken.txt", "badclass.txt"}
    assert "4 values" in str([e for e in errors if e.path.endswith("broken.txt")][0])
    assert "class id 7" in str([e for e in errors if e.path.endswith("badclass.txt")][0])
    by_key = {i.key: i for i in images}
    train = by_key["03f83b7f-88b35fca_Jason1_20251010_021121_001"]
    assert train.split == "train" and [a.classification for a in train.annotations] == ["doe", "buck", "doe"]
    buck = train.annotations[1]
    assert [p.index for p in buck.points] == [0, 1, 2, 3, 4, 8, 9, 10, 11]
    assert buck.points[6] == RelPoint(9, 0.6310, 0.5776, 1)
    assert by_key["2491db4f_SANCTUARY_11106"].annotations[0].points == []


def test_yolo_round_trip_writes_flip_idx_and_reads_back_the_same(tmp_path):
    images, _ = yolo.read_dataset(_user_dataset(tmp_path))
    out = yolo.write_dataset(tmp_path / "out", [(i, None) for i in images])
    config = yaml.safe_load(out.read_text())
    assert config["flip_idx"] == list(layout.FLIP_IDX) and config["kpt_shape"] == [16, 3]
    assert config["names"] == {0: "buck", 1: "doe", 2: "fawn"} and config["train"] == "images/train"
    again, errors = yolo.read_dataset(out)
    assert errors == []
    strip = lambda imgs: sorted((i.key, i.split, [(a.classification, tuple(round(v, 6) for v in a.box),  # noqa: E731
                                                   [(p.index, round(p.x, 6), round(p.y, 6), p.visibility)
                                                    for p in a.points]) for a in i.annotations]) for i in imgs)
    assert strip(again) == strip(images)
    doe_line = (tmp_path / "out" / "labels" / "val" / "2491db4f_SANCTUARY_11106.txt").read_text().split()
    assert len(doe_line) == 5 + 48 and set(doe_line[5:]) == {"0"}  # ultralytics wants equal lines
    buck_line = (tmp_path / "out" / "labels" / "train" / "03f83b7f-88b35fca_Jason1_20251010_021121_001.txt"
                 ).read_text().splitlines()[1].split()
    assert len(buck_line) == 5 + 48


def test_bad_data_yaml_is_one_line(tmp_path):
    (tmp_path / "data.yaml").write_text("names: [buck]\nkpt_shape: [17, 3]\n")
    with pytest.raises(ValueError, match=r"data.yaml: kpt_shape must be \[16, 3\]"):
        yolo.read_dataset(tmp_path)


def _ls_export() -> list[dict]:
    def kp(name, x, y):
        return {"type": "keypointlabels", "from_name": "keypoints", "to_name": "image", "original_width": 1920,
                "original_height": 1080, "value": {"x": x, "y": y, "width": 0.4, "keypointlabels": [name]}}
    box = {"type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": 1920,
           "original_height": 1080, "value": {"x": 40, "y": 30, "width": 20, "height": 40, "rotation": 0,
                                              "rectanglelabels": ["buck"]}}
    doe = {"type": "rectanglelabels", "original_width": 1920, "original_height": 1080,
           "value": {"x": 5, "y": 5, "width": 10, "height": 10, "rectanglelabels": ["doe"]}}
    return [
        {"id": 11, "data": {"image": "/data/upload/3/ab12cd34-Jason1_20251010_021121.JPG"},
         "annotations": [{"id": 1, "updated_at": "2025-11-10", "result": [box]},
                         {"id": 2, "updated_at": "2025-11-16", "result": [box, doe, kp("left_main_beam", 45, 35),
                                                                          kp("right_tip", 55, 32)]}]},
        {"id": 12, "data": {"image": "x.jpg"}, "annotations": [{"id": 3, "result": [kp("left_g9", 1, 1)]}]},
        {"id": 13, "data": {"image": "y.jpg"}, "annotations": [{"id": 4, "result": [kp("left_g2", 1, 1)]}]},
    ]


def test_label_studio_export_import_and_round_trip(tmp_path):
    (tmp_path / "export.json").write_text(json.dumps(_ls_export()))
    (tmp_path / "garbage.json").write_text("{not json")
    images, errors = labelstudio.read_export(tmp_path)
    assert [str(e).split("/")[-1] for e in errors] == ["export.json task 12: keypoint label 'left_g9' is not one "
                                                       "of the 16 antler points",
                                                       "export.json task 13: keypoint left_g2 but no buck box in the task",
                                                       "garbage.json: not a Label Studio JSON export (Expecting "
                                                       "property name enclosed in double quotes: line 1 column 2 "
                                                       "(char 1))"]
    (img,) = images
    assert img.key == "ab12cd34-Jason1_20251010_021121.JPG" and (img.width, img.height) == (1920, 1080)
    buck, doe = img.annotations
    assert buck.classification == "buck" and buck.box == pytest.approx((0.5, 0.5, 0.2, 0.4))
    assert [(p.index, round(p.x, 3), round(p.y, 3)) for p in buck.points] == [(0, 0.45, 0.35), (13, 0.55, 0.32)]
    assert doe.points == []
    again, errors = labelstudio.read_export(_write(tmp_path / "rt.json", labelstudio.to_tasks(images)))
    assert errors == [] and again[0].key == img.key
    assert [(p.index, round(p.x, 9), round(p.y, 9)) for p in again[0].annotations[0].points] == [
        (p.index, round(p.x, 9), round(p.y, 9)) for p in buck.points]
    assert again[0].annotations[0].box == pytest.approx(buck.box)


def _write(path: Path, tasks) -> Path:
    path.write_text(json.dumps(tasks))
    return path


def test_labeling_config_names_every_point_and_class():
    xml = labelstudio.labeling_config()
    for name in layout.KEYPOINT_NAMES + ("buck", "doe", "fawn"):
        assert f'value="{name}"' in xml
    assert xml.count("<Label ") == 19 and 'KeyPointLabels name="keypoints" toName="image"' in xml
    import xml.etree.ElementTree as ET
    ET.fromstring(xml)


def test_yolo_line_of_a_written_buck_flips_consistently():
    ann = Annotation("buck", (0.5, 0.5, 0.2, 0.2), [RelPoint(0, 0.45, 0.4), RelPoint(13, 0.56, 0.41, 1)])
    line = yolo.format_line(ann).split()
    assert line[5:8] == ["0.450000", "0.400000", "2"] and line[5 + 13 * 3: 8 + 13 * 3] == ["0.560000", "0.410000", "1"]
    assert yolo.parse_line(" ".join(line), ["buck", "doe", "fawn"], 3).points == ann.points
    assert AnnotatedImage("a.jpg", [ann]).split is None


def test_label_studio_points_of_two_overlapping_bucks_go_one_each(tmp_path):
    def region(kind, value):
        return {"type": kind, "original_width": 1000, "original_height": 500, "value": value}

    big = region("rectanglelabels", {"x": 10, "y": 10, "width": 60, "height": 60, "rectanglelabels": ["buck"]})
    small = region("rectanglelabels", {"x": 30, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["buck"]})
    beams = [region("keypointlabels", {"x": x, "y": 25, "keypointlabels": ["left_main_beam"]}) for x in (35, 40)]
    tip = region("keypointlabels", {"x": 90, "y": 5, "keypointlabels": ["left_tip"]})  # outside both: the nearest
    task = {"id": 1, "data": {"image": "/data/upload/1/ab-p.jpg"}, "annotations": [{"result": [big, small, *beams, tip]}]}
    (img,), errors = labelstudio.read_export(_write(tmp_path / "e.json", [task]))
    assert errors == []
    first, second = img.annotations
    assert [p.index for p in first.points] == [0, 5] and [p.index for p in second.points] == [0]
    assert round(second.points[0].x, 2) == 0.35  # the smaller box that holds it took the first
