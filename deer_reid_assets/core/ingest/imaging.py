"""Image IO and cropping, with errors that say which file or box is wrong and why."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class ImageError(ValueError):
    """An image file that cannot be used (missing, unreadable, truncated, not an image)."""


class BoxError(ValueError):
    """A detection box that cannot be cropped (malformed, zero-area, outside the image, too small)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_image(path: Path | str) -> Image.Image:
    """Decode ``path`` fully into an RGB image (EXIF orientation applied), or raise ImageError."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            img.load()  # forces full decode: truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img, path)
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not a readable image") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from exc


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """RGB of ``img``. 16-bit greyscale (``I;16*``, or ``I`` holding 0..65535, as PNG decodes) is
    scaled to 8 bits (v * 255 / 65535) instead of Pillow's clipping at 255; other high-bit-depth
    modes are refused with the reason."""
    if img.mode.startswith("I;16") or img.mode == "I":
        import numpy as np

        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(f"{path}: {img.mode} image with values outside 0..65535 is not supported")
        scaled = np.rint(values.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if img.mode == "F":
        raise ImageError(f"{path}: 32-bit floating-point images are not supported (save it as 8- or 16-bit)")
    return img.convert("RGB")


def exif_summary(img: Image.Image) -> dict[str, Any]:
    """A small JSON-safe dict of EXIF fields worth keeping (capture time, camera)."""
    wanted = {0x0132: "DateTime", 0x9003: "DateTimeOriginal", 0x010F: "Make", 0x0110: "Model"}
    try:
        exif = img.getexif()
    except Exception:  # noqa: BLE001 - EXIF is optional decoration
        return {}
    out = {name: _text(exif.get(tag)) for tag, name in wanted.items() if exif.get(tag) is not None}
    try:
        sub = exif.get_ifd(0x8769) if hasattr(exif, "get_ifd") else {}
    except Exception:  # noqa: BLE001 - a malformed EXIF sub-IFD is ignored like a missing one
        sub = {}
    if sub.get(0x9003) is not None:
        out["DateTimeOriginal"] = _text(sub[0x9003])
    return out


def _text(value: Any) -> str:
    """EXIF text as PostgreSQL can store it in jsonb (no NUL, valid Unicode, bounded)."""
    text = str(value).replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text[:200]


@dataclass(frozen=True)
class PixelBox:
    left: int
    top: int
    right: int
    bottom: int
    clamped: bool

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def parse_bbox(bbox: Mapping[str, Any] | None) -> tuple[float, float, float, float]:
    """``{x, y, width, height}`` in pixels -> floats, or BoxError naming what is wrong."""
    if not isinstance(bbox, Mapping):
        raise BoxError(f"bbox must be an object with x, y, width, height; got {bbox!r}")
    try:
        values = tuple(float(bbox[k]) for k in ("x", "y", "width", "height"))
    except KeyError as exc:
        raise BoxError(f"bbox lacks {exc.args[0]!r}: {dict(bbox)}") from exc
    except (TypeError, ValueError) as exc:
        raise BoxError(f"bbox values must be numbers: {dict(bbox)}") from exc
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise BoxError(f"bbox values must be finite: {dict(bbox)}")
    x, y, w, h = values
    if w <= 0 or h <= 0:
        raise BoxError(f"zero or negative area box (width={w:g}, height={h:g})")
    return values


def clamp_box(bbox: Mapping[str, Any], image_size: tuple[int, int], min_side: int = 8) -> PixelBox:
    """The integer pixel box of ``bbox`` clamped to the image; BoxError when nothing usable is left."""
    x, y, w, h = parse_bbox(bbox)
    width, height = image_size
    left, top = max(0, int(round(x))), max(0, int(round(y)))
    right, bottom = min(width, int(round(x + w))), min(height, int(round(y + h)))
    if right <= left or bottom <= top:
        raise BoxError(f"box {x:g},{y:g} {w:g}x{h:g} lies outside the {width}x{height} image")
    if right - left < min_side or bottom - top < min_side:
        raise BoxError(f"box is too small after clamping ({right - left}x{bottom - top} px, minimum {min_side} px a side)")
    clamped = (left, top, right, bottom) != (int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
    return PixelBox(left, top, right, bottom, clamped)


def crop(img: Image.Image, box: PixelBox) -> Image.Image:
    return img.crop((box.left, box.top, box.right, box.bottom))
