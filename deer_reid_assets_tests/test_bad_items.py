"""One bad item costs only itself (issue 12, items 1, 2, 4, 11): each case mixes one bad photo, entry or
name with good ones, and checks the bad one is recorded as failed with its reason while every good
one is imported. Each of these failed the whole chunk (0 imported) before."""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core.ingest import crops
from deer_reid_assets.core.ingest.imaging import load_image
from deer_reid_assets.core.ingest.importer import import_crop_folders, import_sidecar_folder
from deer_reid_assets.core.store import schema as t


def _photo(path: Path, seed: int, size=(64, 48)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _statuses(engine) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.images.c.filename, t.images.c.processing_status, t.images.c.error_message))
        return {r[0]: (r[1], r[2]) for r in rows}


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` (a decompression bomb's header) and no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def _sidecar(root: Path, images: list[dict]) -> None:
    # json.dumps writes float('nan') / float('inf') as the bare tokens NaN / Infinity, as cameras' tools do
    (root / "detections.json").write_text(json.dumps({"format": "deer-reid-detections/1", "images": images}))


BOX = {"x": 4, "y": 4, "width": 40, "height": 30}


def test_a_decompression_bomb_is_recorded_as_failed_and_the_rest_imported(engine, tmp_path):
    root = tmp_path / "photos"
    _photo(root / "cam01" / "good.png", 1)
    _png_header_only(root / "cam01" / "bomb.png", 20000, 20000)
    report = import_sidecar_folder(engine, root)
    assert (report.images_new, report.images_failed) == (1, 1)
    status, reason = _statuses(engine)["bomb.png"]
    assert status == "failed" and "too large to decode safely" in reason
    assert _statuses(engine)["good.png"][0] == "pending"


def test_numeric_nan_and_infinity_boxes_are_rejected_at_cropping_not_at_import(engine, tmp_path):
    root = tmp_path / "photos"
    _photo(root / "a.png", 1, size=(96, 80))
    _photo(root / "b.png", 2, size=(96, 80))
    _sidecar(root, [
        {"file": "a.png", "detections": [{"bbox": {**BOX, "x": float("nan")}}, {"bbox": BOX},
                                         {"bbox": {**BOX, "width": float("inf")}}]},
        {"file": "b.png", "detections": [{"bbox": BOX, "confidence": float("nan")}]},  # a bad entry: b alone
    ])
    assert "NaN" in (root / "detections.json").read_text()  # the real numeric tokens, not strings
    report = import_sidecar_folder(engine, root)
    assert (report.images_new, report.images_failed, report.detections) == (1, 1, 3)
    assert "confidence" in report.failures[0][1] and report.failures[0][0].endswith("b.png")
    made = crops.make_crops(engine, tmp_path / "store")
    assert (made.ok, made.rejected) == (1, 2)
    with engine.connect() as conn:
        reasons = conn.execute(sa.select(t.reid_crops.c.reject_reason).where(t.reid_crops.c.status == "rejected")).scalars()
        assert all("must be finite" in r for r in reasons)


def test_a_file_name_that_is_not_utf8_costs_only_itself(engine, tmp_path):
    root = tmp_path / "photos"
    _photo(root / "cam01" / "good.png", 1)
    bad = Path(os.fsdecode(os.fsencode(str(root / "cam01")) + b"/caf\xe9.png"))
    _photo(bad, 2)
    report = import_sidecar_folder(engine, root)
    assert (report.images_new, report.images_failed) == (1, 1)
    name, reason = report.failures[0]
    assert "not valid UTF-8" in reason and name.endswith("caf\\xe9.png")


def test_names_and_paths_longer_than_the_database_allows_cost_only_their_photo(engine, tmp_path):
    root = tmp_path / "photos"
    _photo(root / "cam01" / "good.png", 1)
    _photo(root / ("c" * 120) / "long_camera.png", 2)
    deep = root / "cam01" / "/".join(["d" * 200] * 3)
    _photo(deep / "long_path.png", 3)
    _photo(root / "cam01" / "labelled.png", 4)
    _sidecar(root, [{"file": "cam01/labelled.png", "camera": "cam01",
                     "detections": [{"bbox": BOX, "label": "Buck-" + "x" * 150}]}])
    report = import_sidecar_folder(engine, root)
    assert (report.images_new, report.images_failed) == (1, 3)
    reasons = {Path(p).name: r for p, r in report.failures}
    assert "camera name is 120 characters" in reasons["long_camera.png"]
    assert "path is" in reasons["long_path.png"] and "longer than the 512" in reasons["long_path.png"]
    assert "deer name is 155 characters" in reasons["labelled.png"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.deer)).scalar() == 0
    crops_root = tmp_path / "crops"
    _photo(crops_root / "Doe-1" / "a.png", 5)
    _photo(crops_root / ("D" * 101) / "b.png", 6)
    report = import_crop_folders(engine, crops_root)
    assert (report.images_new, report.images_failed) == (1, 1) and "deer name is 101" in report.failures[0][1]


def test_a_bad_entry_in_the_sidecar_costs_only_its_photo_not_other_cameras(engine, tmp_path):
    root = tmp_path / "photos"
    _photo(root / "cam01" / "a.png", 1)
    _photo(root / "cam02" / "b.png", 2)
    _sidecar(root, [{"file": "cam01/a.png", "camera": "cam01", "detections": [{"bbox": BOX}]},
                    {"file": "cam02/b.png", "camera": "cam02", "timestamp": "yesterday", "detections": [{"bbox": BOX}]}])
    cam01 = import_sidecar_folder(engine, root, files=["cam01/a.png"], batch="cam01__2026-10-03")
    assert (cam01.images_new, cam01.images_failed, cam01.detections) == (1, 0, 1)
    cam02 = import_sidecar_folder(engine, root, files=["cam02/b.png"], batch="cam02__2026-10-03")
    assert (cam02.images_new, cam02.images_failed) == (0, 1) and "yesterday" in cam02.failures[0][1]
    assert _statuses(engine)["b.png"][0] == "failed"
    # the entry is fixed: the same photo is imported on the next run (its failure was not about its bytes)
    _sidecar(root, [{"file": "cam02/b.png", "camera": "cam02", "detections": [{"bbox": BOX}]}])
    again = import_sidecar_folder(engine, root, files=["cam02/b.png"])
    assert (again.images_new, again.detections) == (1, 1) and _statuses(engine)["b.png"] == ("completed", None)


def test_16_bit_greyscale_png_is_scaled_not_saturated(engine, tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32) * 16).reshape(64, 64).astype(np.uint16)  # 0..65520
    path = tmp_path / "ir.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really 16-bit on disk
    rgb = np.asarray(load_image(path))
    expected = np.rint(ramp / 65535 * 255)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert (rgb == 255).mean() < 0.01  # Pillow's plain convert('RGB') saturates 99.6% of these pixels
    Image.fromarray(np.full((8, 8), 1.5, dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match="floating-point images are not supported"):
        load_image(tmp_path / "float.tiff")


def test_symlinks_are_refused_by_folder_and_crop_imports_as_by_the_sensor(engine, tmp_path):
    outside = _photo(tmp_path / "outside" / "secret.png", 9)
    root = tmp_path / "photos"
    _photo(root / "cam01" / "good.png", 1)
    os.symlink(outside, root / "cam01" / "link.png")
    os.symlink(tmp_path / "outside", root / "cam_linked")
    report = import_sidecar_folder(engine, root)
    assert report.images_new == 1
    reasons = dict((Path(p).name, r) for p, r in report.failures)
    assert "outside the folder" in reasons["link.png"] and "outside the folder" in reasons["cam_linked"]
    _sidecar(root, [{"file": "cam01/link.png"}])  # named explicitly: refused the same way
    assert "outside the folder" in import_sidecar_folder(engine, root).failures[-1][1]

    crops_root = tmp_path / "crops"
    _photo(crops_root / "Doe-1" / "a.png", 2)
    os.symlink(outside, crops_root / "Doe-1" / "b.png")
    os.symlink(tmp_path / "outside", crops_root / "Doe-2")
    report = import_crop_folders(engine, crops_root)
    assert (report.images_new, report.images_failed) == (1, 2)
    with engine.connect() as conn:
        paths = conn.execute(sa.select(t.images.c.path)).scalars().all()
    assert not any("secret" in p or "outside" in p for p in paths)


def test_two_crop_imports_at_once_create_each_deer_once(engine, tmp_path):
    root = tmp_path / "crops"
    for d in range(6):
        for k in range(3):
            _photo(root / f"Buck-{d}" / f"{k}.png", 10 * d + k, size=(24, 24))
    results, errors = [], []

    def run(i: int) -> None:
        try:
            results.append(import_crop_folders(engine, root, chunk=4))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert sum(r.images_new for r in results) == 18 and sum(r.deer_created for r in results) == 6
    with engine.connect() as conn:
        names = conn.execute(sa.select(t.deer.c.name)).scalars().all()
        split = conn.execute(sa.text("SELECT count(DISTINCT deer_id) FROM detections")).scalar()
    assert sorted(names) == [f"Buck-{d}" for d in range(6)] and split == 6
