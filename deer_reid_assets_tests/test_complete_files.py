"""A photo whose bytes say it is whole is taken by the upload scan at once; a cut-off one waits."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from deer_reid_assets.core.ingest.complete_files import is_complete_photo
from deer_reid_assets.core.ingest.uploads import scan_uploads

T0 = datetime(2026, 10, 3, 5, 0, tzinfo=UTC).timestamp()


def _image(size=(64, 48), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def camera_jpeg() -> tuple[bytes, int]:
    """A JPEG with an EXIF-like APP1 segment holding a whole thumbnail JPEG, as camera files have;
    also returns the offset just after the thumbnail's own end marker."""
    photo, thumb = _encode(_image((96, 64)), "JPEG"), _encode(_image((16, 12), seed=1), "JPEG")
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    data = photo[:2] + app1 + photo[2:]
    return data, 2 + len(app1)


def _write(path, data: bytes) -> int:
    path.write_bytes(data)
    return len(data)


def test_whole_jpeg_and_png_are_complete_and_every_cut_is_not(tmp_path):
    jpeg, after_thumbnail = camera_jpeg()
    png = _encode(_image(), "PNG")
    for name, data in (("a.jpg", jpeg), ("a.png", png)):
        p = tmp_path / name
        assert is_complete_photo(p, _write(p, data)), name
        cuts = sorted({*range(1, len(data), max(1, len(data) // 97)), len(data) - 1, len(data) - 2})
        for cut in cuts:
            assert not is_complete_photo(p, _write(p, data[:cut])), f"{name} cut at {cut} of {len(data)}"
    p = tmp_path / "thumb.jpg"
    cut = jpeg[:after_thumbnail]
    assert cut.endswith(b"\xff\xd9")  # ends like a JPEG: the thumbnail's end marker
    assert not is_complete_photo(p, _write(p, cut))


def test_a_size_other_than_the_scanned_one_or_other_bytes_are_not_complete(tmp_path):
    jpeg, _ = camera_jpeg()
    p = tmp_path / "a.jpg"
    n = _write(p, jpeg)
    assert not is_complete_photo(p, n - 1)  # grew since the scan's stat
    assert not is_complete_photo(tmp_path / "missing.jpg", n)
    q = tmp_path / "b.jpg"
    assert not is_complete_photo(q, _write(q, b"GIF89a" + b"\x00" * 40 + b"\xff\xd9"))


def test_scan_takes_a_complete_photo_at_once_and_lets_a_partial_one_wait(tmp_path):
    jpeg, _ = camera_jpeg()
    (tmp_path / "cam01").mkdir()
    for name, data in (("whole.jpg", jpeg), ("partial.jpg", jpeg[: len(jpeg) // 2])):
        p = tmp_path / "cam01" / name
        p.write_bytes(data)
        os.utime(p, (T0, T0))
    now = T0 + 0.2  # both written 0.2 s ago, well inside the 3 s settle time
    first = scan_uploads(tmp_path, None, now=now, settle_seconds=3)
    assert [f for b in first.batches for f in b.files] == ["cam01/whole.jpg"] and first.waiting == 1
    later = scan_uploads(tmp_path, first.cursor, now=T0 + 5, settle_seconds=3)
    assert [f for b in later.batches for f in b.files] == ["cam01/partial.jpg"]  # by age, as before
    strict = scan_uploads(tmp_path, None, now=now, settle_seconds=3, trust_complete=False)
    assert strict.batches == [] and strict.waiting == 2
