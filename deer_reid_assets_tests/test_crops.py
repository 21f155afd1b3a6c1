"""Cropping detections out of their photos (core/crops.py, core/imaging.py), against real PostgreSQL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core.ingest import crops, imaging
from deer_reid_assets.core.ingest.imaging import BoxError, ImageError, PixelBox, clamp_box, load_image, parse_bbox
from deer_reid_assets.core.ingest.importer import import_sidecar_folder
from deer_reid_assets.core.store import schema as t

H, W = 240, 320
TOLERANCE = 3.0  # mean absolute difference allowed by JPEG quality 95 on this texture


def _texture(seed: int) -> np.ndarray:
    """A distinct (H, W, 3) texture: fine grey detail (a 1-pixel shift changes it a lot) under a
    slowly varying colour tint (so JPEG's chroma subsampling barely touches it)."""
    rng = np.random.default_rng(seed)

    def smooth(cell: int, channels: int) -> np.ndarray:
        small = rng.integers(0, 256, (H // cell + 2, W // cell + 2, channels), dtype=np.uint8)
        small = small[..., 0] if channels == 1 else small
        big = Image.fromarray(small).resize(((W // cell + 2) * cell, (H // cell + 2) * cell), Image.BILINEAR)
        return np.asarray(big)[:H, :W].astype(float)

    grey, tint = smooth(3, 1), smooth(40, 3) - 128
    return np.clip(grey[..., None] * 0.7 + tint * 0.5 + 40, 0, 255).astype(np.uint8)


def _make_folder(root: Path, photos: dict[str, tuple[np.ndarray, list[dict]]]) -> None:
    """PNG photos (lossless) plus a sidecar; each detection's confidence tags it."""
    images = []
    for name, (pixels, boxes) in photos.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / name)
        images.append({"file": name, "camera": "cam01",
                       "detections": [{"bbox": box, "confidence": conf, "classification": "buck"}
                                      for conf, box in boxes]})
    (root / "detections.json").write_text(json.dumps({"format": "deer-reid-detections/1", "images": images}))


def _detections(engine) -> dict[float, str]:
    """confidence tag -> detection id."""
    with engine.connect() as conn:
        return {r.confidence: r.id for r in conn.execute(sa.select(t.detections.c.id, t.detections.c.confidence))}


def _crops(engine) -> dict[str, sa.Row]:
    with engine.connect() as conn:
        return {r.detection_id: r for r in conn.execute(sa.select(t.reid_crops))}


def _image_id(engine, filename: str) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.select(t.images.c.id).where(t.images.c.filename == filename)).scalar_one()


def _add_detection(engine, image_id: str, bbox, confidence: float, **extra) -> str:
    with engine.begin() as conn:
        return conn.execute(sa.insert(t.detections).values(image_id=image_id, bbox=bbox, confidence=confidence,
                                                           classification="doe", **extra)
                            .returning(t.detections.c.id)).scalar_one()


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


# --- crops are the pixels of their boxes ---------------------------------------------------------
def test_crops_are_the_pixels_of_their_boxes(engine, tmp_path):
    img = _texture(1)
    boxes = {0.91: {"x": 53, "y": 37, "width": 131, "height": 101},
             0.92: {"x": 200, "y": 120, "width": 96, "height": 110},
             0.93: {"x": 0, "y": 0, "width": 40, "height": 64}}
    _make_folder(tmp_path / "photos", {"cam01/p1.png": (img, list(boxes.items()))})
    import_sidecar_folder(engine, tmp_path / "photos")
    store = tmp_path / "store"

    report = crops.make_crops(engine, store)

    assert (report.ok, report.clamped, report.rejected) == (3, 0, 0)
    ids, rows = _detections(engine), _crops(engine)
    for conf, box in boxes.items():
        row = rows[ids[conf]]
        x, y, w, h = box["x"], box["y"], box["width"], box["height"]
        assert (row.status, row.width, row.height, row.clamped) == ("ok", w, h, False)
        assert row.reject_reason is None and row.crop_version == crops.CROP_VERSION
        assert Path(row.path) == crops.crop_path(store, ids[conf]) and Path(row.path).is_file()
        with Image.open(row.path) as saved:
            assert saved.format == "JPEG"
            got = np.asarray(saved.convert("RGB"))
        assert got.shape == (h, w, 3)
        assert _mad(got, img[y : y + h, x : x + w]) < TOLERANCE
        # the texture is fine enough that a window one pixel off would not pass
        if x + w < W:
            assert _mad(got, img[y : y + h, x + 1 : x + 1 + w]) > 3 * TOLERANCE
        if y + h < H:
            assert _mad(got, img[y + 1 : y + 1 + h, x : x + w]) > 3 * TOLERANCE


def test_overhanging_box_is_clamped_to_the_photo(engine, tmp_path):
    img = _texture(2)
    _make_folder(tmp_path / "photos", {"p.png": (img, [
        (0.5, {"x": -20, "y": 200, "width": 100, "height": 100}),   # off the left and bottom edges
        (0.6, {"x": 280, "y": -30, "width": 90, "height": 80}),     # off the right and top edges
    ])})
    import_sidecar_folder(engine, tmp_path / "photos")
    report = crops.make_crops(engine, tmp_path / "store")
    assert (report.ok, report.clamped, report.rejected) == (2, 2, 0)
    ids, rows = _detections(engine), _crops(engine)
    for conf, (top, bottom, left, right) in {0.5: (200, 240, 0, 80), 0.6: (0, 50, 280, 320)}.items():
        row = rows[ids[conf]]
        assert (row.status, row.clamped, row.width, row.height) == ("ok", True, right - left, bottom - top)
        with Image.open(row.path) as saved:
            assert _mad(np.asarray(saved.convert("RGB")), img[top:bottom, left:right]) < TOLERANCE


BAD_BOXES = {
    # confidence tag: (bbox, words the reason must contain)
    0.11: ({"x": 10, "y": 10, "width": 0, "height": 30}, ["zero or negative area", "width=0"]),
    0.12: ({"x": 10, "y": 10, "width": 40, "height": -5}, ["zero or negative area", "height=-5"]),
    0.13: ({"x": 400, "y": 10, "width": 50, "height": 50}, ["outside", "400,10 50x50", f"{W}x{H}"]),
    0.14: ({"x": -80, "y": -80, "width": 50, "height": 50}, ["outside"]),
    0.15: ({"x": 100, "y": 100, "width": 10, "height": 40}, ["too small", "10x40", f"minimum {crops.MIN_SIDE}"]),
    0.16: ({"x": 310, "y": 100, "width": 60, "height": 60}, ["too small", "10x60"]),  # small once clamped
    0.17: ({"x": 10, "y": 10, "width": 40}, ["lacks", "'height'"]),
    0.18: ({"x": "left", "y": 10, "width": 40, "height": 40}, ["must be numbers", "left"]),
    # the strings "NaN"/"Infinity"; the numeric tokens: test_bad_items.py::test_numeric_nan_and_infinity_boxes_...
    0.19: ({"x": "NaN", "y": 10, "width": 40, "height": 40}, ["finite"]),
    0.20: ({"x": 10, "y": 10, "width": "Infinity", "height": 40}, ["finite"]),
    0.21: ([10, 10, 40, 40], ["must be an object"]),
    0.22: (None, ["must be an object"]),
}


def test_bad_boxes_are_rejected_with_a_reason_and_the_rest_of_the_photo_is_cropped(engine, tmp_path):
    img = _texture(3)
    good = {0.91: {"x": 30, "y": 40, "width": 60, "height": 50}, 0.92: {"x": 150, "y": 60, "width": 80, "height": 90}}
    _make_folder(tmp_path / "photos", {"p.png": (img, list(good.items()))})
    import_sidecar_folder(engine, tmp_path / "photos")
    image_id = _image_id(engine, "p.png")
    for conf, (bbox, _) in BAD_BOXES.items():
        _add_detection(engine, image_id, bbox, conf)
    invalid = _add_detection(engine, image_id, {"x": 1, "y": 1, "width": 50, "height": 50}, 0.99, is_valid=False)

    report = crops.make_crops(engine, tmp_path / "store")

    assert (report.ok, report.rejected) == (len(good), len(BAD_BOXES))
    assert sum(report.reasons.values()) == len(BAD_BOXES)
    ids, rows = _detections(engine), _crops(engine)
    assert invalid not in rows  # detections marked invalid are not cropped
    for conf, (bbox, words) in BAD_BOXES.items():
        row = rows[ids[conf]]
        assert (row.status, row.path, row.width, row.height) == ("rejected", None, None, None), bbox
        for word in words:
            assert word in row.reject_reason, (bbox, row.reject_reason)
    for conf, box in good.items():
        row = rows[ids[conf]]
        assert (row.status, row.width, row.height) == ("ok", box["width"], box["height"])
        with Image.open(row.path) as saved:
            expected = img[box["y"] : box["y"] + box["height"], box["x"] : box["x"] + box["width"]]
            assert _mad(np.asarray(saved.convert("RGB")), expected) < TOLERANCE


def test_unreadable_photo_rejects_its_detections_only_and_rerunning_does_nothing(engine, tmp_path):
    a, b = _texture(4), _texture(5)
    _make_folder(tmp_path / "photos", {
        "a.png": (a, [(0.5, {"x": 10, "y": 10, "width": 100, "height": 80})]),
        "b.png": (b, [(0.6, {"x": 20, "y": 20, "width": 50, "height": 50}),
                      (0.7, {"x": 100, "y": 90, "width": 60, "height": 60})]),
    })
    import_sidecar_folder(engine, tmp_path / "photos")
    broken = tmp_path / "photos" / "b.png"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])

    store = tmp_path / "store"
    report = crops.make_crops(engine, store)

    assert (report.ok, report.rejected) == (1, 2)
    assert report.reasons == {"photo unreadable": 2}
    ids, rows = _detections(engine), _crops(engine)
    assert rows[ids[0.5]].status == "ok"
    for conf in (0.6, 0.7):
        reason = rows[ids[conf]].reject_reason
        assert rows[ids[conf]].status == "rejected"
        assert reason.startswith("photo unreadable") and "b.png" in reason

    files = {p: p.stat().st_mtime_ns for p in store.rglob("*.jpg")}
    assert len(files) == 1
    again = crops.make_crops(engine, store)
    assert (again.ok, again.clamped, again.rejected) == (0, 0, 0)
    assert _crops(engine) == rows
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*.jpg")} == files
    with engine.connect() as conn:
        assert crops.pending_detections(conn) == []


def test_make_crops_can_be_limited_to_import_batches(engine, tmp_path):
    box = {"x": 10, "y": 10, "width": 40, "height": 40}
    _make_folder(tmp_path / "one", {"a.png": (_texture(6), [(0.5, box)])})
    _make_folder(tmp_path / "two", {"b.png": (_texture(7), [(0.6, box)])})
    first = import_sidecar_folder(engine, tmp_path / "one", batch="batch-one")
    import_sidecar_folder(engine, tmp_path / "two", batch="batch-two")
    report = crops.make_crops(engine, tmp_path / "store", image_batches=[first.batch])
    assert report.ok == 1
    ids = _detections(engine)
    assert set(_crops(engine)) == {ids[0.5]}
    assert crops.make_crops(engine, tmp_path / "store").ok == 1
    assert set(_crops(engine)) == {ids[0.5], ids[0.6]}


# --- imaging unit tests --------------------------------------------------------------------------
def test_clamp_box_inside_and_overhanging():
    assert clamp_box({"x": 10, "y": 20, "width": 30, "height": 40}, (100, 80)) == PixelBox(10, 20, 40, 60, False)
    # fractional pixels round to the nearest edge
    assert clamp_box({"x": 10.4, "y": 19.6, "width": 30.2, "height": 40.0}, (100, 80)) == PixelBox(10, 20, 41, 60, False)
    box = clamp_box({"x": -5, "y": 70, "width": 30, "height": 40}, (100, 80))
    assert box == PixelBox(0, 70, 25, 80, True) and (box.width, box.height) == (25, 10)
    assert clamp_box({"x": 0, "y": 0, "width": 100, "height": 80}, (100, 80)).clamped is False
    assert clamp_box({"x": 0, "y": 0, "width": 101, "height": 80}, (100, 80)) == PixelBox(0, 0, 100, 80, True)
    # numbers given as strings are accepted as numbers
    assert clamp_box({"x": "1", "y": "2", "width": "30", "height": "30"}, (100, 80)) == PixelBox(1, 2, 31, 32, False)


@pytest.mark.parametrize("bbox, size, min_side, message", [
    ({"x": 120, "y": 5, "width": 10, "height": 10}, (100, 80), 1, "box 120,5 10x10 lies outside the 100x80 image"),
    ({"x": -30, "y": 5, "width": 30, "height": 10}, (100, 80), 1, "lies outside the 100x80 image"),
    ({"x": 5, "y": 75, "width": 20, "height": 20}, (100, 80), 8, "too small after clamping (20x5 px, minimum 8 px a side)"),
    ({"x": 5, "y": 5, "width": 7, "height": 20}, (100, 80), 8, "too small after clamping (7x20 px"),
    ({"x": 5, "y": 5, "width": 0, "height": 20}, (100, 80), 8, "zero or negative area box (width=0, height=20)"),
])
def test_clamp_box_errors_say_what_is_wrong(bbox, size, min_side, message):
    with pytest.raises(BoxError) as info:
        clamp_box(bbox, size, min_side)
    assert message in str(info.value)


@pytest.mark.parametrize("bbox, message", [
    (None, "bbox must be an object with x, y, width, height; got None"),
    ("10,10,5,5", "bbox must be an object"),
    ({"x": 1, "y": 2, "w": 3, "h": 4}, "bbox lacks 'width'"),
    ({"x": 1, "y": 2, "width": [3], "height": 4}, "bbox values must be numbers: {'x': 1, 'y': 2, 'width': [3], 'height': 4}"),
    ({"x": 1, "y": None, "width": 3, "height": 4}, "bbox values must be numbers"),
    ({"x": math.nan, "y": 2, "width": 3, "height": 4}, "bbox values must be finite"),
    ({"x": 1, "y": 2, "width": 3, "height": -math.inf}, "bbox values must be finite"),
    ({"x": 1, "y": 2, "width": -3, "height": 4}, "zero or negative area box (width=-3, height=4)"),
])
def test_parse_bbox_errors(bbox, message):
    with pytest.raises(BoxError) as info:
        parse_bbox(bbox)
    assert message in str(info.value)


def test_parse_bbox_returns_floats():
    assert parse_bbox({"x": 1, "y": "2.5", "width": 3, "height": 4, "extra": "ignored"}) == (1.0, 2.5, 3.0, 4.0)


def test_load_image_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ImageError, match="file not found") as info:
        load_image(missing)
    assert str(missing) in str(info.value)

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00\x01not an image" * 100)
    with pytest.raises(ImageError, match="not a readable image") as info:
        load_image(garbage)
    assert str(garbage) in str(info.value)

    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(_texture(8)).save(truncated, format="JPEG", quality=90)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated") as info:
        load_image(truncated)
    assert str(truncated) in str(info.value)

    folder = tmp_path / "a_folder.jpg"
    folder.mkdir()
    with pytest.raises(ImageError, match="file not found"):
        load_image(folder)


def test_load_image_gives_rgb_and_applies_exif_orientation(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((20, 30), 77, dtype=np.uint8), mode="L").save(grey)
    img = load_image(grey)
    assert img.mode == "RGB" and img.size == (30, 20) and img.getpixel((3, 3)) == (77, 77, 77)

    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (12, 10), (10, 20, 30, 128)).save(rgba)
    assert load_image(rgba).mode == "RGB"

    rotated = tmp_path / "rotated.jpg"
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:, :30] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(rotated, format="JPEG", quality=95, exif=exif)
    img = load_image(rotated)
    assert img.size == (40, 60)  # width and height swapped
    arr = np.asarray(img)
    assert arr[:25].mean() > 200 and arr[35:].mean() < 50  # the white half is now on top


def test_sha256_file_is_the_digest_of_the_bytes(tmp_path):
    import hashlib

    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000  # more than one 1 MiB read
    path.write_bytes(data)
    assert imaging.sha256_file(path) == hashlib.sha256(data).hexdigest()
