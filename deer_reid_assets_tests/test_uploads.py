"""Upload-folder scanning for the sensor: stability, never-twice, bursts, path safety, cursor."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deer_reid_assets.core.ingest.uploads import ScanResult, camera_key, scan_uploads

T0 = datetime(2026, 10, 3, 5, 0, tzinfo=UTC).timestamp()  # a fixed "capture" time
DAY = 86400.0


def put(root: Path, rel: str, mtime: float = T0, data: bytes = b"\xff\xd8jpegdata") -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, (mtime, mtime))
    return p


def files_of(result: ScanResult) -> list[str]:
    return [f for b in result.batches for f in b.files]


def scan(root, cursor, now, **kw) -> ScanResult:
    r = scan_uploads(root, cursor, now=now, **kw)
    json.loads(r.cursor)  # always a JSON string
    return r


def test_settled_photos_go_in_one_scan_grouped_in_batches_then_never_again(tmp_path):
    put(tmp_path, "cam01/a.jpg", T0)
    put(tmp_path, "cam01/b.JPG", T0 + 60)
    put(tmp_path, "cam01/c.jpeg", T0 + DAY)  # next day
    put(tmp_path, "cam02/d.png", T0 + 30)
    put(tmp_path, "root.jpg", T0 + 90)  # camera "unknown"

    second = scan(tmp_path, None, T0 + 2 * DAY)  # old enough: taken by the first scan that sees them
    assert {b.key: b.files for b in second.batches} == {
        "cam01__2026-10-03": ["cam01/a.jpg", "cam01/b.JPG"],
        "cam02__2026-10-03": ["cam02/d.png"],
        "unknown__2026-10-03": ["root.jpg"],
        "cam01__2026-10-04": ["cam01/c.jpeg"],
    }
    assert [b.key for b in second.batches][0] == "cam01__2026-10-03"  # oldest batch first
    assert {b.key: b.camera for b in second.batches}["unknown__2026-10-03"] == "unknown"
    assert second.waiting == 0 and second.submitted == 5
    assert len({b.fingerprint for b in second.batches}) == 4

    # Round-trip the cursor through JSON like a sensor store would; nothing is submitted again.
    stored = json.dumps(json.loads(second.cursor))
    third = scan(tmp_path, stored, T0 + 2 * DAY + 30)
    assert third.batches == [] and third.waiting == 0 and third.deferred == 0
    fourth = scan(tmp_path, third.cursor, T0 + 3 * DAY)
    assert fourth.batches == []


def test_a_photo_is_taken_by_the_first_scan_after_it_settled(tmp_path):
    r1 = scan(tmp_path, None, T0 + 100)
    put(tmp_path, "cam01/a.jpg", T0 + 101)  # written just after the first scan
    r2 = scan(tmp_path, r1.cursor, T0 + 102, settle_seconds=3)
    assert r2.batches == [] and r2.waiting == 1  # 1 s old: maybe still being written
    r3 = scan(tmp_path, r2.cursor, T0 + 104, settle_seconds=3)
    assert files_of(r3) == ["cam01/a.jpg"]  # 3 s unchanged: taken, without waiting for a further scan


def test_growing_file_waits_until_it_stops_changing(tmp_path):
    p = put(tmp_path, "cam01/a.jpg", T0, b"x" * 10)
    r1 = scan(tmp_path, None, T0 + 1)
    assert r1.waiting == 1
    with p.open("ab") as fh:
        fh.write(b"y" * 10)
    os.utime(p, (T0 + 12, T0 + 12))
    r2 = scan(tmp_path, r1.cursor, T0 + 25)
    assert r2.batches == [] and r2.waiting == 1  # size and mtime changed
    with p.open("ab") as fh:
        fh.write(b"z" * 10)
    os.utime(p, (T0 + 12, T0 + 12))  # same mtime, bigger: still changing
    r3 = scan(tmp_path, r2.cursor, T0 + 40)
    assert r3.batches == [] and r3.waiting == 1
    r4 = scan(tmp_path, r3.cursor, T0 + 55)
    assert files_of(r4) == ["cam01/a.jpg"]


def test_recently_modified_file_waits_for_settle_seconds(tmp_path):
    put(tmp_path, "cam01/a.jpg", T0)
    r1 = scan(tmp_path, None, T0 + 1, settle_seconds=5)
    r2 = scan(tmp_path, r1.cursor, T0 + 3, settle_seconds=5)  # unchanged but only 3 s old
    assert r2.batches == [] and r2.waiting == 1
    r3 = scan(tmp_path, r2.cursor, T0 + 6, settle_seconds=5)
    assert files_of(r3) == ["cam01/a.jpg"]


def test_zero_byte_files_wait(tmp_path):
    p = put(tmp_path, "cam01/a.jpg", T0, b"")
    r1 = scan(tmp_path, None, T0 + 100)
    r2 = scan(tmp_path, r1.cursor, T0 + 115)
    r3 = scan(tmp_path, r2.cursor, T0 + 130)
    assert r2.batches == [] and r3.batches == [] and r3.waiting == 1
    p.write_bytes(b"data")
    os.utime(p, (T0 + 131, T0 + 131))
    r4 = scan(tmp_path, r3.cursor, T0 + 145)
    r5 = scan(tmp_path, r4.cursor, T0 + 160)
    assert r4.batches == [] and files_of(r5) == ["cam01/a.jpg"]


def test_future_mtime_is_submitted_after_two_scans_a_settle_apart(tmp_path):
    put(tmp_path, "cam01/a.jpg", T0 + 365 * DAY)  # camera clock a year ahead, timestamps preserved
    r1 = scan(tmp_path, None, T0)
    r2 = scan(tmp_path, r1.cursor, T0 + 2, settle_seconds=5)
    assert r2.batches == []
    r3 = scan(tmp_path, r2.cursor, T0 + 15, settle_seconds=5)
    assert [b.key for b in r3.batches] == ["cam01__2027-10-03"]


def test_burst_is_submitted_in_capture_order_across_scans(tmp_path):
    n = 1200
    cams = ["cam01", "cam02", "cam03"]
    for i in range(n):
        # names deliberately not in mtime order; 1 minute apart spans the days 2026-10-03..04
        put(tmp_path, f"{cams[i % 3]}/IMG_{(i * 7919) % 10000:05d}.JPG", T0 + 60 * i)
    expected_order = sorted(
        (os.stat(tmp_path / f"{cams[i % 3]}/IMG_{(i * 7919) % 10000:05d}.JPG").st_mtime_ns,
         f"{cams[i % 3]}/IMG_{(i * 7919) % 10000:05d}.JPG")
        for i in range(n)
    )
    now = T0 + 3 * DAY
    r = None
    got, deferred = [], []
    for k in range(4):
        r = scan(tmp_path, r.cursor if r else None, now + 15 * k, max_files=500)
        chunk = sorted(files_of(r), key=lambda rel: os.stat(tmp_path / rel).st_mtime_ns)
        got.append(chunk)
        deferred.append(r.deferred)
        assert r.waiting == 0
        for b in r.batches:
            assert b.files == sorted(b.files)
            cam, day = b.key.split("__")
            assert cam == b.camera and all(f.startswith(cam + "/") for f in b.files)
            assert len(b.files) > 1  # grouped, never one batch per photo here
    assert [len(c) for c in got] == [500, 500, 200, 0]
    assert deferred == [700, 200, 0, 0]
    flat = [f for c in got for f in c]
    assert len(flat) == len(set(flat)) == n
    assert flat == [rel for _, rel in expected_order]  # oldest first, across scans


def test_new_file_with_older_mtime_is_still_submitted(tmp_path):
    for i in range(5):
        put(tmp_path, f"cam01/new_{i}.jpg", T0 + DAY + i)
    r2 = scan(tmp_path, None, T0 + 2 * DAY)
    assert len(files_of(r2)) == 5
    put(tmp_path, "cam01/old_copy.jpg", T0 - 30 * DAY)  # copied later with its old timestamp
    put(tmp_path, "cam01/aaa.jpg", T0 - 31 * DAY)
    r4 = scan(tmp_path, r2.cursor, T0 + 2 * DAY + 45)
    assert {b.key: b.files for b in r4.batches} == {
        "cam01__2026-09-02": ["cam01/aaa.jpg"],
        "cam01__2026-09-03": ["cam01/old_copy.jpg"],
    }
    r5 = scan(tmp_path, r4.cursor, T0 + 2 * DAY + 60)
    assert r5.batches == []


@pytest.fixture
def layout(tmp_path):
    outside = tmp_path / "outside"
    put(outside, "secret.jpg", T0)
    put(outside, "cam_elsewhere/x.jpg", T0)
    root = tmp_path / "uploads"
    put(root, "cam01/ok.jpg", T0)
    return root, outside


def test_symlinks_escaping_the_folder_are_rejected_once_and_never_followed(layout):
    root, outside = layout
    os.symlink(outside / "secret.jpg", root / "cam01" / "link.jpg")  # absolute, outside
    os.symlink("../../outside/secret.jpg", root / "cam01" / "innocent.jpg")  # relative ../ escape
    os.symlink(outside / "cam_elsewhere", root / "cam_linked")  # symlinked dir outside
    os.symlink("../outside", root / "photos")  # relative dir escape at the root
    os.symlink("missing.jpg", root / "cam01" / "dangling.jpg")  # broken, inside
    os.symlink(root / "cam01", root / "cam_alias")  # dir inside: not followed
    os.symlink("ok.jpg", root / "cam01" / "inside_link.jpg")  # file inside: fine
    os.mkfifo(root / "cam01" / "pipe.jpg")

    r1 = scan(root, None, T0 + 100)
    reasons = dict(r1.rejected)
    assert set(reasons) == {
        "cam01/link.jpg", "cam01/innocent.jpg", "cam_linked", "photos",
        "cam01/dangling.jpg", "cam_alias", "cam01/pipe.jpg",
    }
    for name in ("cam01/link.jpg", "cam01/innocent.jpg", "cam_linked", "photos"):
        assert "outside the upload folder" in reasons[name]
    assert "not followed" in reasons["cam_alias"]
    assert reasons["cam01/pipe.jpg"] == "not a regular file"
    assert "broken" in reasons["cam01/dangling.jpg"]

    assert sorted(files_of(r1)) == ["cam01/inside_link.jpg", "cam01/ok.jpg"]
    r2 = scan(root, r1.cursor, T0 + 115)
    assert r2.rejected == [] and r2.batches == []  # reported once, submitted once
    r3 = scan(root, r2.cursor, T0 + 130)
    assert r3.rejected == [] and r3.batches == []
    submitted = set(files_of(r1))
    assert not any("secret" in f or "elsewhere" in f or f.startswith(("photos", "cam_")) for f in submitted)

    # A new escaping link is reported when it appears; one removed and re-created is reported again.
    os.symlink(outside / "secret.jpg", root / "cam01" / "later.jpg")
    os.unlink(root / "photos")
    r4 = scan(root, r3.cursor, T0 + 145)
    assert [n for n, _ in r4.rejected] == ["cam01/later.jpg"]
    os.symlink("../outside", root / "photos")
    r5 = scan(root, r4.cursor, T0 + 160)
    assert [n for n, _ in r5.rejected] == ["photos"]


def test_root_given_through_a_symlink_works(layout, tmp_path):
    root, _ = layout
    alias = tmp_path / "alias"
    os.symlink(root, alias)
    r1 = scan(alias, None, T0 + 100)
    assert r1.rejected == [] and files_of(r1) == ["cam01/ok.jpg"]


def test_hidden_temp_and_other_files_are_ignored_silently(tmp_path):
    put(tmp_path, "cam01/ok.jpg", T0)
    put(tmp_path, "cam01/.hidden.jpg", T0)
    put(tmp_path, ".sync/cam01/x.jpg", T0)
    put(tmp_path, "cam01/.thumbs/x.jpg", T0)
    put(tmp_path, "cam01/upload.jpg.part", T0)
    put(tmp_path, "cam01/upload.jpg.tmp", T0)
    put(tmp_path, "cam01/upload.tmp", T0)
    put(tmp_path, "cam01/backup.jpg~", T0)
    put(tmp_path, "cam01/notes.txt", T0)
    put(tmp_path, "cam01/clip.mp4", T0)
    put(tmp_path, "cam01/noext", T0)
    r1 = scan(tmp_path, None, T0 + 100)
    r2 = scan(tmp_path, r1.cursor, T0 + 115)
    assert r1.waiting == 0 and r1.rejected == [] and r2.rejected == [] and r2.batches == []
    assert files_of(r1) == ["cam01/ok.jpg"]


def test_nested_folders_belong_to_their_top_camera(tmp_path):
    put(tmp_path, "cam01/DCIM/100MEDIA/a.jpg", T0)
    r1 = scan(tmp_path, None, T0 + 100)
    assert [(b.key, b.camera, b.files) for b in r1.batches] == [
        ("cam01__2026-10-03", "cam01", ["cam01/DCIM/100MEDIA/a.jpg"])
    ]


def test_camera_names_are_sanitised_into_distinct_keys(tmp_path):
    names = ["Hochsitz Süd", "Cam 1", "Cam_1", "Cam-1", "鹿カメラ", "a__b", "ok.cam-2_x", "x" * 80]
    for name in names:
        put(tmp_path, f"{name}/p.jpg", T0)
    r1 = scan(tmp_path, None, T0 + 100)
    keys = {b.camera: b.key for b in r1.batches}
    assert set(keys) == set(names)
    assert len(set(keys.values())) == len(names)  # no two folders share a key
    for camera, key in keys.items():
        cam, day = key.split("__")  # "__" only separates camera from day
        assert day == "2026-10-03"
        assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in key), key
        assert cam == camera_key(camera)
    assert keys["Cam_1"] == "Cam_1__2026-10-03" and keys["ok.cam-2_x"] == "ok.cam-2_x__2026-10-03"
    assert keys["Hochsitz Süd"].startswith("Hochsitz_Sud-")
    assert keys["Cam 1"].startswith("Cam_1-") and keys["Cam 1"] != keys["Cam_1"]
    assert keys["鹿カメラ"].startswith("camera-")
    assert keys["a__b"].startswith("a_b-")
    assert camera_key("Hochsitz Süd") == camera_key("Hochsitz Süd")  # stable across calls


@pytest.mark.parametrize(
    "cursor",
    [
        "not json",
        "[]",
        "42",
        '{"version": 2, "submitted": "", "pending": "", "rejected": []}',
        '{"version": 1}',
        '{"version": 1, "submitted": "!!notbase64", "pending": "", "rejected": []}',
        '{"version": 1, "submitted": "aGVsbG8=", "pending": "", "rejected": []}',  # not zlib
    ],
)
def test_malformed_cursor_raises_value_error(tmp_path, cursor):
    with pytest.raises(ValueError, match="malformed upload cursor"):
        scan_uploads(tmp_path, cursor, now=T0)


def test_malformed_cursor_wrong_inner_shapes(tmp_path):
    good = json.loads(scan_uploads(tmp_path, None, now=T0).cursor)
    from deer_reid_assets.core.ingest.uploads import _pack

    for patch in (
        {"submitted": _pack({"a": 1})},
        {"submitted": _pack([1, 2])},
        {"pending": _pack([["a.jpg", 1]])},
        {"pending": _pack([["a.jpg", "1", 2]])},
        {"rejected": "x"},
        {"scanned_at": "yesterday"},
        {"submitted_count": 3},
    ):
        with pytest.raises(ValueError, match="malformed upload cursor"):
            scan_uploads(tmp_path, json.dumps({**good, **patch}), now=T0)
    for fresh in (None, ""):
        assert scan_uploads(tmp_path, fresh, now=T0).batches == []


def test_bad_arguments_and_missing_root(tmp_path):
    with pytest.raises(ValueError):
        scan_uploads(tmp_path, None, max_files=0)
    with pytest.raises(ValueError):
        scan_uploads(tmp_path, None, settle_seconds=-1)
    with pytest.raises(FileNotFoundError):
        scan_uploads(tmp_path / "nope", None)
    put(tmp_path, "file.jpg")
    with pytest.raises(NotADirectoryError):
        scan_uploads(tmp_path / "file.jpg", None)


def test_unreadable_camera_folder_is_reported_and_others_go_on(tmp_path, monkeypatch):
    put(tmp_path, "cam01/a.jpg", T0)
    put(tmp_path, "locked/b.jpg", T0)
    real_scandir = os.scandir

    def scandir(path):  # chmod 0 does not stop root, so simulate the refusal
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    r1 = scan(tmp_path, None, T0 + 100)
    r2 = scan(tmp_path, r1.cursor, T0 + 115)
    assert r1.rejected == [("locked", "folder cannot be listed: Permission denied")]
    assert files_of(r1) == ["cam01/a.jpg"] and r2.rejected == [] and r2.batches == []


def test_cursor_size_for_12000_paths():
    """Documented bounds for 12,000 submitted paths: camera-style names < 100 KB (measured ~36 KB),
    random 16-hex names < 250 KB (measured ~166 KB)."""
    import random

    from deer_reid_assets.core.ingest.uploads import _dump_cursor, _load_cursor, _State

    rng = random.Random(0)
    cases = {
        "camera-style": ({f"cam{c:02d}/IMG_{i:06d}.JPG" for c in range(12) for i in range(1000)}, 100_000),
        "random-hex": ({f"cam{c:02d}/{rng.getrandbits(64):016x}.jpg" for c in range(12) for i in range(1000)},
                       250_000),
    }
    for name, (paths, bound) in cases.items():
        assert len(paths) == 12_000
        raw = len(json.dumps(sorted(paths)))
        start = time.perf_counter()
        cursor = _dump_cursor(_State(submitted=set(paths), pending={}, rejected=set(), scanned_at=T0))
        back = _load_cursor(cursor)
        elapsed = time.perf_counter() - start
        print(f"\n12,000 {name} paths: plain JSON list {raw} B, cursor {len(cursor)} B "
              f"({len(cursor) / 12000:.2f} B/path), encode+decode {elapsed * 1000:.1f} ms")
        assert back.submitted == paths
        assert len(cursor) < bound
        assert elapsed < 2.0


def test_scan_speed_12000_files(tmp_path):
    """Measured ~50-100 ms per scan here; the bound is generous for slow CI disks."""
    for c in range(12):
        d = tmp_path / f"cam{c:02d}"
        d.mkdir()
        for i in range(1000):
            p = d / f"IMG_{i:06d}.JPG"
            p.write_bytes(b"x")
            os.utime(p, (T0 + i, T0 + i))
    now = T0 + DAY
    t0 = time.perf_counter()
    r = scan_uploads(tmp_path, None, now=now, max_files=1)
    t1 = time.perf_counter()
    r = scan_uploads(tmp_path, r.cursor, now=now + 15, max_files=500)
    t2 = time.perf_counter()
    assert r.submitted == 500 and r.deferred == 11_499
    r = scan_uploads(tmp_path, r.cursor, now=now + 30, max_files=20_000)
    t3 = time.perf_counter()
    r = scan_uploads(tmp_path, r.cursor, now=now + 45)
    t4 = time.perf_counter()
    assert r.submitted == 0 and r.waiting == 0
    print(f"\n12,000 files: first (1 of them) {1000 * (t1 - t0):.0f} ms, 500 {1000 * (t2 - t1):.0f} ms, "
          f"11,499 {1000 * (t3 - t2):.0f} ms, idle {1000 * (t4 - t3):.0f} ms; idle cursor {len(r.cursor)} B")
    assert max(t1 - t0, t2 - t1, t3 - t2, t4 - t3) < 10
