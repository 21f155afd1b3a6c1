"""Importing photos, detections, labels and ground truth (core/ingest.py), against real PostgreSQL."""

from __future__ import annotations

import copy
import json
import shutil
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core.ingest.importer import SidecarError, import_crop_folders, import_sidecar_folder, load_sidecar
from deer_reid_assets.core.store import schema as t
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset

CONFIG = SyntheticConfig(n_images=24, n_bucks=4, n_does=2, seed=3)


# --- helpers -------------------------------------------------------------------------------------
@pytest.fixture
def dataset(tmp_path) -> Path:
    return generate_dataset(tmp_path / "data", CONFIG).root.resolve()


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()


def _table_counts(engine) -> dict[str, int]:
    tables = [t.images, t.detections, t.deer, t.locations, t.reid_image_files, t.reid_ground_truth]
    return {tab.name: _count(engine, tab) for tab in tables}


def _noise_image(path: Path, seed: int, size=(64, 48)) -> Path:
    """A small image whose bytes differ from every other seed's."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


# --- a whole synthetic folder --------------------------------------------------------------------
def test_import_synthetic_folder_matches_the_json_files(engine, dataset):
    sidecar = _json(dataset / "detections.json")
    truth = _json(dataset / "ground_truth.json")["detections"]
    n_images = len(sidecar["images"])
    all_dets = [d for e in sidecar["images"] for d in e["detections"]]
    labelled = [d for d in all_dets if "label" in d]
    assert labelled and len(labelled) < len(all_dets)  # the data set exercises both kinds

    report = import_sidecar_folder(engine, dataset, ground_truth=dataset / "ground_truth.json")

    assert report.images_new == n_images
    assert report.images_failed == 0 and report.failures == []
    assert report.images_already_imported == 0 and report.images_pending_detection == 0
    assert report.detections == len(all_dets)
    assert report.labelled == len(labelled)
    assert report.ground_truth == len([d for d in all_dets if d["key"] in truth]) == len(truth)
    assert report.deer_created == len({d["label"] for d in labelled})

    counts = _table_counts(engine)
    assert counts["images"] == counts["reid_image_files"] == n_images
    assert counts["detections"] == len(all_dets)
    assert counts["reid_ground_truth"] == len(truth)
    assert _count(engine, t.detections, t.detections.c.deer_id.isnot(None)) == len(labelled)
    assert _count(engine, t.images, t.images.c.processing_status == "completed") == n_images

    with engine.connect() as conn:
        # one location per camera, with the sidecar's description and position
        locations = {r.name: r for r in conn.execute(sa.select(t.locations))}
        assert set(locations) == {c["name"] for c in sidecar["cameras"]}
        for cam in sidecar["cameras"]:
            loc = locations[cam["name"]]
            assert (loc.description, loc.coordinates) == (cam["description"], {"lat": cam["latitude"], "lon": cam["longitude"]})

        images = {r.path: r for r in conn.execute(sa.select(t.images))}
        files = {r.image_id: r for r in conn.execute(sa.select(t.reid_image_files))}
        for entry in sidecar["images"]:
            img = images[str(dataset / entry["file"])]
            assert img.filename == Path(entry["file"]).name
            assert img.location_id == locations[entry["camera"]].id
            assert img.timestamp == datetime.fromisoformat(entry["timestamp"])
            with Image.open(dataset / entry["file"]) as pil:
                assert (files[img.id].width, files[img.id].height) == pil.size
            assert files[img.id].import_batch == report.batch

        # every detection of a photo, with its box, class and (when labelled) its deer
        deer = {r.id: r for r in conn.execute(sa.select(t.deer))}
        truth_rows = {r.detection_id: r for r in conn.execute(sa.select(t.reid_ground_truth))}
        dets_by_image = defaultdict(list)
        for r in conn.execute(sa.select(t.detections)):
            dets_by_image[r.image_id].append(r)
        for entry in sidecar["images"]:
            img = images[str(dataset / entry["file"])]
            got = sorted(dets_by_image[img.id], key=lambda r: r.bbox["x"])
            want = sorted(entry["detections"], key=lambda d: d["bbox"]["x"])
            assert len(got) == len(want)
            for row, det in zip(got, want):
                assert row.bbox == det["bbox"]
                assert row.classification == det["classification"]
                assert row.confidence == pytest.approx(det["confidence"])
                gt = truth_rows[row.id]
                assert gt.identity == truth[det["key"]]["deer"]
                assert gt.sex == truth[det["key"]]["sex"]
                assert gt.antler_points == truth[det["key"]]["antler_points"]
                assert gt.source == "ground_truth_file"
                assert gt.attributes["pose"] == truth[det["key"]]["pose"]
                if "label" in det:
                    assert row.is_reviewed is True and row.is_valid is True and row.reviewed_by == "import"
                    assert deer[row.deer_id].name == det["label"]
                else:
                    assert row.deer_id is None and row.is_reviewed is False

    # deer rows are named after the labels, with their sex
    sexes = {i["name"]: i["sex"] for i in _json(dataset / "ground_truth.json")["individuals"]}
    assert {r.name for r in deer.values()} == {d["label"] for d in labelled}
    for r in deer.values():
        assert r.sex == sexes[r.name]


def test_importing_again_does_nothing_and_copies_are_recognised_by_content(engine, dataset):
    first = import_sidecar_folder(engine, dataset, ground_truth=dataset / "ground_truth.json")
    before = _table_counts(engine)

    again = import_sidecar_folder(engine, dataset, ground_truth=dataset / "ground_truth.json")
    assert again.images_already_imported == first.images_new
    assert (again.images_new, again.detections, again.labelled, again.ground_truth, again.deer_created) == (0, 0, 0, 0, 0)
    assert _table_counts(engine) == before

    # a byte-identical copy under another name (not listed: it would come in as 'pending') is skipped
    listed = dataset / _json(dataset / "detections.json")["images"][0]["file"]
    shutil.copyfile(listed, dataset / "images" / "cam01" / "renamed_copy.jpg")
    third = import_sidecar_folder(engine, dataset)
    assert third.images_new == 0 and third.images_pending_detection == 0
    assert third.images_already_imported == first.images_new + 1
    assert _table_counts(engine) == before


def test_duplicate_photo_in_one_sidecar_is_imported_once(engine, tmp_path):
    root = tmp_path / "dup"
    a = _noise_image(root / "a.png", 1)
    shutil.copyfile(a, root / "b.png")
    box = {"x": 1, "y": 1, "width": 20, "height": 20}
    _write_json(root / "detections.json", {"format": "deer-reid-detections/1", "images": [
        {"file": "a.png", "camera": "c", "detections": [{"bbox": box}]},
        {"file": "b.png", "camera": "c", "detections": [{"bbox": box}]},
    ]})
    report = import_sidecar_folder(engine, root)
    assert (report.images_new, report.images_already_imported, report.detections) == (1, 1, 1)
    assert _count(engine, t.images) == 1 and _count(engine, t.detections) == 1


# --- unreadable and missing photos ---------------------------------------------------------------
def test_corrupt_photos_are_recorded_as_failed_and_the_batch_goes_on(engine, dataset):
    sidecar = _json(dataset / "detections.json")
    entries = sidecar["images"]
    truncated, garbage, missing = (dataset / entries[i]["file"] for i in (1, 4, 7))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage.write_bytes(b"this is not a jpeg at all" * 40)
    missing.unlink()
    bad = {str(truncated), str(garbage), str(missing)}
    good_dets = sum(len(e["detections"]) for e in entries if str(dataset / e["file"]) not in bad)

    report = import_sidecar_folder(engine, dataset)

    assert report.images_new == len(entries) - 3
    assert report.images_failed == 3
    assert report.detections == good_dets
    failures = dict(report.failures)
    assert set(failures) == bad
    assert "file not found" in failures[str(missing)]
    assert "truncated" in failures[str(truncated)]

    with engine.connect() as conn:
        rows = {r.path: r for r in conn.execute(sa.select(t.images))}
        for path in (truncated, garbage):
            row = rows[str(path)]
            assert row.processing_status == "failed"
            assert path.name in row.error_message
            assert _count(engine, t.detections, t.detections.c.image_id == row.id) == 0
        assert str(missing) not in rows  # nothing to record: no bytes, no hash
        assert {r.processing_status for p, r in rows.items() if p not in bad} == {"completed"}
    assert _count(engine, t.detections) == good_dets
    # the failed photos are known by content: importing again neither re-fails nor duplicates them
    again = import_sidecar_folder(engine, dataset)
    assert again.images_already_imported == len(entries) - 1
    assert again.images_failed == 1 and [p for p, _ in again.failures] == [str(missing)]


# --- sidecar validation --------------------------------------------------------------------------
def _valid_sidecar() -> dict:
    box = {"x": 10, "y": 10, "width": 30, "height": 20}
    return {
        "format": "deer-reid-detections/1",
        "cameras": [{"name": "cam01"}],
        "images": [
            {"file": "images/a.png", "camera": "cam01", "timestamp": "2026-10-03T05:41:00+00:00",
             "detections": [{"bbox": box, "classification": "buck", "confidence": 0.9},
                            {"bbox": box, "classification": "doe", "confidence": 0.8}]},
            {"file": "images/b.png", "camera": "cam01", "detections": []},
        ],
    }


def _mutate(path, value):
    def apply(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return apply


_DELETE = object()
BAD_SIDECARS = {
    "wrong format": (_mutate(["format"], "deer-reid-detections/2"), ["'format'", "deer-reid-detections/2"]),
    "no images list": (_mutate(["images"], {"file": "x"}), ["'images' must be a list"]),
    "image without file": (_mutate(["images", 1, "file"], _DELETE), ["images[1]", "'file'"]),
    "detection without bbox": (_mutate(["images", 0, "detections", 1, "bbox"], _DELETE), ["images[0].detections[1]", "bbox"]),
    "absolute path": (_mutate(["images", 1, "file"], "/etc/passwd"), ["images[1]", "/etc/passwd", "absolute"]),
    "dot-dot path": (_mutate(["images", 0, "file"], "images/../../outside.png"), ["images[0]", "'..'"]),
    "bad classification": (_mutate(["images", 0, "detections", 1, "classification"], "moose"),
                           ["images[0].detections[1]", "moose"]),
    "bad confidence": (_mutate(["images", 0, "detections", 0, "confidence"], 1.5), ["images[0].detections[0]", "confidence"]),
    "bad timestamp": (_mutate(["images", 0, "timestamp"], "yesterday at dawn"), ["images[0]", "yesterday at dawn", "ISO 8601"]),
    "detections not a list": (_mutate(["images", 1, "detections"], None), ["images[1]", "detections"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SIDECARS))
def test_bad_sidecar_raises_naming_file_and_entry(engine, tmp_path, case):
    mutate, expected = BAD_SIDECARS[case]
    root = tmp_path / "photos"
    _noise_image(root / "images" / "a.png", 1)
    _noise_image(root / "images" / "b.png", 2)
    doc = _valid_sidecar()
    load_sidecar_path = root / "detections.json"
    _write_json(load_sidecar_path, doc)
    load_sidecar(load_sidecar_path)  # the unmutated document is valid

    bad = copy.deepcopy(doc)
    mutate(bad)
    _write_json(load_sidecar_path, bad)
    with pytest.raises(SidecarError) as info:
        load_sidecar(load_sidecar_path)
    message = str(info.value)
    assert str(load_sidecar_path) in message
    for part in expected:
        assert part in message
    if case in DOCUMENT_PROBLEMS:  # the whole file is unusable: importing fails before anything is written
        with pytest.raises(SidecarError):
            import_sidecar_folder(engine, root)
        assert _count(engine, t.images) == 0 and _count(engine, t.locations) == 0
        return
    # one bad entry costs only its own photo: recorded as failed with the reason, the other imported
    report = import_sidecar_folder(engine, root)
    names_no_photo = case in ("image without file", "absolute path", "dot-dot path")
    assert report.images_failed == 1 and report.images_new == (2 if names_no_photo else 1)
    ((where, reason),) = report.failures
    assert all(part in reason for part in expected), reason
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(t.images.c.filename, t.images.c.processing_status)).all())
    bad_name = "a.png" if "images[0]" in message else "b.png"
    good_name = "b.png" if bad_name == "a.png" else "a.png"
    assert statuses[good_name] in ("completed", "pending")
    if not names_no_photo:  # otherwise the photo itself comes in as pending detection, the entry is reported
        assert statuses[bad_name] == "failed" and where.endswith(bad_name)


DOCUMENT_PROBLEMS = {"wrong format", "no images list"}


def test_invalid_json_and_bad_ground_truth_raise(engine, tmp_path):
    root = tmp_path / "photos"
    _noise_image(root / "images" / "a.png", 1)
    sidecar = root / "detections.json"
    sidecar.write_text('{"format": "deer-reid-detections/1", "images": [', encoding="utf-8")
    with pytest.raises(SidecarError, match="not valid JSON") as info:
        import_sidecar_folder(engine, root)
    assert str(sidecar) in str(info.value)
    sidecar.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(SidecarError, match="JSON object"):
        load_sidecar(sidecar)

    _write_json(sidecar, _valid_sidecar() | {"images": [{"file": "images/a.png"}]})
    truth = tmp_path / "truth.json"
    _write_json(truth, {"format": "something-else", "detections": {}})
    with pytest.raises(SidecarError, match="deer-reid-ground-truth/1") as info:
        import_sidecar_folder(engine, root, ground_truth=truth)
    assert str(truth) in str(info.value)
    _write_json(truth, {"format": "deer-reid-ground-truth/1", "detections": {"k": {"sex": "doe"}}})
    with pytest.raises(SidecarError, match="'deer' name"):
        import_sidecar_folder(engine, root, ground_truth=truth)
    with pytest.raises(SidecarError, match="file not found"):
        import_sidecar_folder(engine, root, ground_truth=tmp_path / "nope.json")
    with pytest.raises(SidecarError, match="image folder not found"):
        import_sidecar_folder(engine, tmp_path / "no-such-folder")
    assert _count(engine, t.images) == 0


# --- labels --------------------------------------------------------------------------------------
def test_labels_reuse_deer_by_name_and_learn_the_sex_from_any_labelled_detection(engine, tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        _noise_image(root / f"p{i}.png", i)
    box = {"x": 1, "y": 1, "width": 20, "height": 20}
    _write_json(root / "detections.json", {"format": "deer-reid-detections/1", "images": [
        # the detector could not tell the first sighting's sex; the later ones say doe
        {"file": "p0.png", "camera": "c", "detections": [{"bbox": box, "classification": "unknown", "label": "Doe-X"}]},
        {"file": "p1.png", "camera": "c", "detections": [{"bbox": box, "classification": "doe", "label": "Doe-X"},
                                                         {"bbox": box, "classification": "buck", "label": "Buck-Y"}]},
        {"file": "p2.png", "camera": "c", "detections": [{"bbox": box, "classification": "buck", "label": "Buck-Y"}]},
    ]})
    report = import_sidecar_folder(engine, root)
    assert (report.labelled, report.deer_created) == (4, 2)
    with engine.connect() as conn:
        deer = {r.name: r for r in conn.execute(sa.select(t.deer))}
        per_deer = dict(conn.execute(sa.select(t.detections.c.deer_id, sa.func.count()).group_by(t.detections.c.deer_id)).all())
    assert set(deer) == {"Doe-X", "Buck-Y"}
    assert deer["Doe-X"].sex == "doe"
    assert deer["Buck-Y"].sex == "buck"
    assert per_deer == {deer["Doe-X"].id: 2, deer["Buck-Y"].id: 2}


# --- photos the sidecar does not list ------------------------------------------------------------
def test_unlisted_photos_come_in_as_pending(engine, tmp_path):
    root = tmp_path / "photos"
    _noise_image(root / "listed" / "a.png", 1)
    _noise_image(root / "camX" / "b.png", 2)
    _noise_image(root / "camX" / "deeper" / "c.jpg", 3)
    (root / "camX" / "notes.txt").write_text("not a photo")
    _write_json(root / "detections.json", {"format": "deer-reid-detections/1", "images": [
        {"file": "listed/a.png", "camera": "cam01",
         "detections": [{"bbox": {"x": 1, "y": 1, "width": 20, "height": 20}}]}]})

    report = import_sidecar_folder(engine, root)

    assert report.images_new == 3
    assert report.images_pending_detection == 2
    assert report.detections == 1
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.images.c.filename, t.images.c.processing_status, t.locations.c.name)
            .join(t.locations, t.locations.c.id == t.images.c.location_id)
        ).all()
    # unlisted photos belong to their top-level camera folder, as in the upload folder
    assert sorted(tuple(r) for r in rows) == [("a.png", "completed", "cam01"), ("b.png", "pending", "camX"),
                                               ("c.jpg", "pending", "camX")]


def test_only_the_given_files_are_imported(engine, tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        _noise_image(root / "cam07" / f"{i}.png", i)
    report = import_sidecar_folder(engine, root, files=["cam07/1.png"])
    assert (report.images_new, report.images_pending_detection) == (1, 1)
    # a name that escapes the folder is refused with the reason; the other names still come in
    again = import_sidecar_folder(engine, root, files=["../escape.png", "cam07/2.png"])
    assert (again.images_new, again.images_failed) == (1, 1)
    assert "must be a path inside the folder" in again.failures[0][1]


def test_folder_without_sidecar_imports_everything_as_pending(engine, tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        _noise_image(root / "cam07" / f"{i}.png", i)
    report = import_sidecar_folder(engine, root)
    assert (report.images_new, report.images_pending_detection, report.detections) == (3, 3, 0)
    assert _count(engine, t.images, t.images.c.processing_status == "pending") == 3


# --- crop folders --------------------------------------------------------------------------------
def test_import_crop_folders_one_reviewed_detection_per_file(engine, tmp_path):
    root = tmp_path / "crops"
    layout = {"Buck-A": ["1.jpg", "2.png"], "Doe B": ["x.jpg"]}
    sizes = {}
    for k, (name, files) in enumerate(layout.items()):
        for j, file in enumerate(files):
            size = (40 + 8 * k, 30 + 4 * j)
            sizes[(name, file)] = size
            _noise_image(root / name / file, 10 * k + j, size=size)
    (root / "README.txt").write_text("ignored: not in a deer folder")
    _noise_image(root / "loose.png", 99)  # not in a deer folder: ignored

    report = import_crop_folders(engine, root, sex="buck")

    assert (report.images_new, report.detections, report.labelled, report.ground_truth) == (3, 3, 3, 3)
    assert report.deer_created == 2
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.images.c.filename, t.detections, t.deer.c.name, t.deer.c.sex, t.reid_ground_truth.c.identity,
                      t.reid_ground_truth.c.source, t.reid_ground_truth.c.sex.label("gt_sex"))
            .join(t.detections, t.detections.c.image_id == t.images.c.id)
            .join(t.deer, t.deer.c.id == t.detections.c.deer_id)
            .join(t.reid_ground_truth, t.reid_ground_truth.c.detection_id == t.detections.c.id)
        ).all()
    assert sorted((r.name, r.filename) for r in rows) == sorted((n, f) for n, fs in layout.items() for f in fs)
    for r in rows:
        w, h = sizes[(r.name, r.filename)]
        assert r.bbox == {"x": 0, "y": 0, "width": w, "height": h}
        assert r.is_reviewed is True and r.is_valid is True and r.classification == "buck"
        assert r.identity == r.name and r.source == "crop_folders" and r.gt_sex == "buck" and r.sex == "buck"

    again = import_crop_folders(engine, root)
    assert again.images_already_imported == 3 and again.images_new == 0
    assert _count(engine, t.detections) == 3


def test_import_crop_folders_rejects_empty_and_non_folders(engine, tmp_path):
    empty = tmp_path / "empty"
    (empty / "Buck-A").mkdir(parents=True)
    (empty / "Buck-A" / "notes.txt").write_text("no images here")
    with pytest.raises(SidecarError, match="no images found") as info:
        import_crop_folders(engine, empty)
    assert str(empty) in str(info.value)
    a_file = _noise_image(tmp_path / "single.png", 1)
    with pytest.raises(SidecarError, match="not a folder"):
        import_crop_folders(engine, a_file)
    with pytest.raises(SidecarError, match="not a folder"):
        import_crop_folders(engine, tmp_path / "missing")
    _noise_image(tmp_path / "ok" / "Buck-A" / "1.png", 2)
    with pytest.raises(SidecarError, match="sex must be one of"):
        import_crop_folders(engine, tmp_path / "ok", sex="stag")
    assert _count(engine, t.images) == 0


def test_repaired_photo_replaces_its_failed_record(engine, dataset):
    entries = _json(dataset / "detections.json")["images"]
    path = dataset / entries[2]["file"]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    first = import_sidecar_folder(engine, dataset)
    assert first.images_failed == 1
    path.write_bytes(good)  # copied again from the camera card
    second = import_sidecar_folder(engine, dataset)
    assert (second.images_new, second.images_failed, second.detections) == (1, 0, len(entries[2]["detections"]))
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.images).where(t.images.c.path == str(path))).one()
    assert row.processing_status == "completed" and row.error_message is None
    assert _count(engine, t.images) == len(entries)


def test_a_changed_photo_at_an_imported_path_is_reported_not_fatal(engine, dataset):
    entries = _json(dataset / "detections.json")["images"]
    first = import_sidecar_folder(engine, dataset)
    before = _table_counts(engine)
    changed = dataset / entries[0]["file"]
    _noise_image(tmp := changed.with_suffix(".tmp.png"), 5)
    changed.write_bytes(tmp.read_bytes())  # new bytes at a path already imported (still decodable)
    tmp.unlink()
    second = import_sidecar_folder(engine, dataset)
    assert second.images_already_imported == first.images_new - 1
    assert second.images_failed == 1 and second.images_new == 0
    assert second.failures[0][0] == str(changed) and "already recorded at this path" in second.failures[0][1]
    assert _table_counts(engine) == before


@pytest.mark.parametrize("info,expected", [
    ({"description": "oak ridge", "latitude": 30.5, "longitude": -98}, ("oak ridge", {"lat": 30.5, "lon": -98.0})),
    ({"description": 7, "latitude": 30.5}, (None, None)),  # a position needs both; a description must be text
    ({"latitude": float("nan"), "longitude": 1.0}, (None, None)),
    ({"latitude": True, "longitude": 1.0}, (None, None)),  # a bool is not a coordinate
    ({"latitude": "30.5", "longitude": "1"}, (None, None)),
])
def test_a_cameras_description_and_position_are_kept_only_when_well_formed(info, expected):
    from deer_reid_assets.core.ingest.sidecar import camera_fields

    assert camera_fields(info) == expected


def test_the_exif_time_is_the_original_one_and_a_bad_one_is_ignored():
    from deer_reid_assets.core.ingest.sidecar import exif_time

    assert exif_time({"DateTimeOriginal": "2024:11:02 06:41:09", "DateTime": "2025:01:01 00:00:00"}).isoformat() == \
        "2024-11-02T06:41:09+00:00"
    assert exif_time({"DateTime": "2025:01:01 00:00:00"}).year == 2025
    assert exif_time({"DateTimeOriginal": "not a time"}) is None and exif_time({}) is None
