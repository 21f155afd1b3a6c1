"""Whether a photo file is complete, read from its structure rather than from its age.

The upload sensor waits until a photo has not changed for a settle time (3 s), because a camera or a
copy may still be writing it. A photo whose bytes say it is whole needs no wait: this module reads
only the few bytes that say so, without decoding the image.

* **JPEG**: starts with SOI (``FF D8``); the marker segments before the scan (APPn with EXIF and its
  thumbnail, DQT, SOF, DHT, ...) are walked by their length fields, and every one of them, and the
  SOS header, must lie inside the file; the file must end with EOI (``FF D9``). A file cut off right
  after the EXIF thumbnail's own EOI fails the walk (the APP1 segment runs past the end), so the
  thumbnail cannot pass for the photo.
* **PNG**: the 8-byte signature, and the file ends with the IEND chunk.

A file that is none of these, or cannot be read, is "not known complete" (``False``): it then waits
for the settle time as before. Reads at most one small read per segment header (a dozen reads for a
camera JPEG).
"""

from __future__ import annotations

import os

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOS = 0xDA
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers without a length field
_MAX_SEGMENTS = 256


def is_complete_photo(path: str | os.PathLike, size: int) -> bool:
    """True when the file at ``path`` is a whole JPEG or PNG of exactly ``size`` bytes (its size from
    the scan's ``stat``: a file that grew or shrank since is not taken)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size != size or size < 16:
                return False
            head = f.read(8)
            if head == _PNG_SIGNATURE:
                f.seek(size - len(_PNG_IEND))
                return f.read(len(_PNG_IEND)) == _PNG_IEND
            if head[:2] == b"\xff\xd8":
                return _jpeg_complete(f, size)
    except OSError:
        return False
    return False


def _jpeg_complete(f, size: int) -> bool:
    pos = 2
    for _ in range(_MAX_SEGMENTS):
        f.seek(pos)
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return False
        if marker[1] == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker[1] in _JPEG_STANDALONE:
            pos += 2
            continue
        length = f.read(2)
        if len(length) < 2:
            return False
        pos += 2 + int.from_bytes(length, "big")
        if pos > size - 2:  # the segment (or the SOS header) runs into the last two bytes or past the end
            return False
        if marker[1] == _JPEG_SOS:
            f.seek(size - 2)
            return f.read(2) == b"\xff\xd9"
    return False
