"""Fault suite, ingest: fuzzed sidecars and photos (Hypothesis) and a burst of 1,000 uploads with 1% bad
files. The property in both: bad items recorded with a reason, good items imported, nothing else changed."""

from __future__ import annotations

import io
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deer_reid_assets.core.ingest.importer import import_sidecar_folder
from deer_reid_assets.core.store import schema as t

pytestmark = pytest.mark.fault
_SEEDS = itertools.count(1000)


def _png(seed: int, size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _bad_bytes(kind: str, seed: int) -> bytes:
    good = _png(seed)
    return {"truncated": good[: len(good) // 2], "garbage": b"not an image %d " % seed * 8, "empty": b"",
            "bomb": good[:16] + (20000).to_bytes(4, "big") * 2 + good[24:33] + seed.to_bytes(8, "big")}[kind]


finite = st.floats(min_value=-50, max_value=200, allow_nan=False)
number = st.one_of(finite, st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")), st.integers(-5, 300))
any_value = st.one_of(number, st.text(max_size=8), st.none(), st.booleans())
bbox = st.one_of(
    st.fixed_dictionaries({"x": number, "y": number, "width": number, "height": number}),
    st.fixed_dictionaries({"x": any_value, "y": any_value}),
    any_value,
)
detection = st.fixed_dictionaries(
    {"bbox": bbox},
    optional={"confidence": st.one_of(st.floats(0, 1), number, any_value),
              "classification": st.sampled_from(["buck", "doe", "fawn", "unknown", "moose", ""]),
              "label": st.one_of(st.text(min_size=1, max_size=12), st.text(min_size=101, max_size=120),
                                 st.just("Buck\x00-1"), st.integers(0, 9)),
              "key": st.text(max_size=6)},
)
photo = st.fixed_dictionaries({
    "bytes": st.sampled_from(["good", "good", "good", "truncated", "garbage", "bomb"]),  # unique bytes each
    "detections": st.one_of(st.lists(detection, max_size=3), any_value),
    "timestamp": st.one_of(st.just("2026-10-03T05:41:00+00:00"), st.text(max_size=10)),
    "camera": st.one_of(st.just("cam01"), st.text(min_size=1, max_size=8), st.text(min_size=101, max_size=110)),
    "listed": st.booleans(),
})


def _snapshot(engine) -> dict[str, set]:
    with engine.connect() as conn:
        return {
            "images": set(conn.execute(sa.select(t.images.c.path, t.images.c.processing_status)).all()),
            "detections": set(conn.execute(sa.select(t.detections.c.id)).scalars()),
            "deer": set(conn.execute(sa.select(t.deer.c.name)).scalars()),
        }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(photos=st.lists(photo, min_size=1, max_size=5))
def test_fuzzed_sidecars_and_photos_bad_recorded_good_imported_nothing_else(engine, tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("fuzz")
    entries, expected_good = [], {}
    for p in photos:
        seed = next(_SEEDS)
        name = f"cam01/p{seed}.png"
        (root / "cam01").mkdir(exist_ok=True)
        (root / name).write_bytes(_png(seed) if p["bytes"] == "good" else _bad_bytes(p["bytes"], seed))
        entry = {"file": name, "camera": p["camera"], "timestamp": p["timestamp"], "detections": p["detections"]}
        if p["listed"]:
            entries.append(entry)
        if p["bytes"] == "good":
            expected_good[str(root / name)] = entry if p["listed"] else None
    (root / "detections.json").write_text(json.dumps({"format": "deer-reid-detections/1", "images": entries}))
    before = _snapshot(engine)

    report = import_sidecar_folder(engine, root)  # must never raise for item-level problems

    after = _snapshot(engine)
    new_images = {path: status for path, status in after["images"] - before["images"]}
    failed = {path for path, _ in report.failures}
    assert report.images_new + report.images_failed == len(photos), report.failures
    for path in (str(root / f"cam01/{Path(e).name}") for e in os.listdir(root / "cam01")):
        imported = new_images.get(path) in ("completed", "pending")
        assert imported != (path in failed), (path, new_images.get(path), report.failures)  # one or the other
        if path not in expected_good:
            assert not imported  # a bad photo is never imported ...
        elif expected_good[path] is None:
            assert new_images[path] == "pending"  # ... an unlisted good one always is
    for _, reason in report.failures:
        assert reason and "\n" not in reason
    # nothing else changed: no earlier row touched, no detection or deer beyond what was imported
    assert before["images"] <= after["images"]
    assert len(after["detections"]) - len(before["detections"]) == report.detections
    with engine.connect() as conn:
        labels = set(conn.execute(sa.text(
            "SELECT DISTINCT dr.name FROM detections d JOIN deer dr ON dr.id = d.deer_id JOIN images i ON i.id = d.image_id "
            "WHERE i.path LIKE :root"), {"root": f"{root}/%"}).scalars())
    assert after["deer"] - before["deer"] <= labels


def test_a_burst_of_1000_uploads_with_1_percent_bad_files(engine, tmp_path):
    import dagster as dg

    from deer_reid_assets.core.ingest.uploads import scan_uploads
    from deer_reid_assets.defs.ingest import camera_images, upload_batches
    from deer_reid_assets.defs.resources import DatabaseResource, ImageStoreResource

    uploads = tmp_path / "uploads"
    bad = set(range(0, 1000, 100))  # 10 of 1,000
    old = time.time() - 3600
    for i in range(1000):
        path = uploads / f"cam{i % 4}" / f"p{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_bad_bytes(("truncated", "garbage", "empty")[i % 3], i) if i in bad else _png(i, size=8))
        os.utime(path, (old, old))
    store = ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads))
    resources = {"database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)), "image_store": store}
    instance = dg.DagsterInstance.ephemeral()
    cursor, runs, failed = None, 0, 0
    for _ in range(4):  # first sight, then two evaluations of at most 500
        result = scan_uploads(uploads, cursor, settle_seconds=1, max_files=500)
        cursor = result.cursor
        for batch in result.batches:
            instance.add_dynamic_partitions(upload_batches.name, [batch.key])
            run = dg.materialize([camera_images], instance=instance, resources=resources, partition_key=batch.key,
                                 run_config={"ops": {"camera_images": {"config": {"files": batch.files}}}})
            assert run.success
            runs += 1
            failed += run.asset_materializations_for_node("camera_images")[0].metadata["images_failed"].value
    assert runs >= 4 and failed == len(bad) - _empty(bad)
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT processing_status::text, count(*) FROM images GROUP BY 1")).all())
    assert statuses == {"pending": 1000 - len(bad), "failed": len(bad) - _empty(bad)}  # every good photo in


def _empty(bad: set[int]) -> int:
    """Empty files have no bytes to hash and are never submitted by the sensor (size 0 never settles)."""
    return sum(1 for i in bad if i % 3 == 2)
