"""YOLOv8-pose datasets in the existing system's layout.

``data.yaml`` (``path``, ``train: images/train``, ``val: images/val``, ``nc``, ``names`` 0 buck /
1 doe / 2 fawn, ``kpt_shape: [16, 3]``, ``flip_idx``, ``keypoint_names``), photos under
``images/<split>/`` and one label file per photo under ``labels/<split>/<photo stem>.txt``; a line per
object: ``class cx cy w h`` (0-1) followed, for the pose model, by 16 x ``x y visibility``
(0-1, visibility 0/1/2; ``0 0 0`` for a point not annotated). The existing system writes does and
fawns with the box only, which ultralytics drops as corrupt in a file that also holds a buck; both
shapes are read, and does and fawns are written with 16 x ``0 0 0``. A file that cannot be read is reported in one line
and the others go on.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from deer_reid_assets.core.antlers import layout
from deer_reid_assets.core.antlers.annotations import CLASSES, AnnotatedImage, Annotation, FileError, RelPoint

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def data_yaml(root: Path, splits: tuple[str, ...] = ("train", "val")) -> dict:
    """The dataset description this project writes (and ultralytics reads)."""
    out = {"path": str(Path(root).resolve())}
    for split in splits:
        out[split] = f"images/{split}"
    out.update({"nc": len(CLASSES), "names": dict(enumerate(CLASSES)), "kpt_shape": [layout.N_KEYPOINTS, 3],
                "flip_idx": list(layout.FLIP_IDX), "keypoint_names": list(layout.KEYPOINT_NAMES)})
    return out


def _names(config: dict) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise ValueError("data.yaml has no 'names' (class names)")


def parse_line(line: str, names: list[str], kpt_dims: int) -> Annotation:
    values = line.split()
    n_kpt = layout.N_KEYPOINTS * kpt_dims
    if len(values) not in (5, 5 + n_kpt):
        raise ValueError(f"{len(values)} values; expected 5 (box) or {5 + n_kpt} (box + 16 keypoints x {kpt_dims})")
    try:
        cls = int(values[0])
        nums = [float(v) for v in values[1:]]
    except ValueError as e:
        raise ValueError(f"not a number ({e})") from None
    if not 0 <= cls < len(names):
        raise ValueError(f"class id {cls} not in data.yaml's names {names}")
    if not all(math.isfinite(v) for v in nums):
        raise ValueError("non-finite number")
    box = tuple(nums[:4])
    if not all(0.0 <= v <= 1.0 for v in box) or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"box {box} must be within 0-1 with a positive size")
    points = []
    for i in range(layout.N_KEYPOINTS if len(nums) > 4 else 0):
        chunk = nums[4 + i * kpt_dims: 4 + (i + 1) * kpt_dims]
        x, y = chunk[0], chunk[1]
        v = int(chunk[2]) if kpt_dims == 3 else (2 if (x or y) else 0)
        if v not in (0, 1, 2):
            raise ValueError(f"keypoint {i} visibility {chunk[2]} must be 0, 1 or 2")
        if v > 0:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"keypoint {i} at ({x}, {y}) outside 0-1")
            points.append(RelPoint(i, x, y, v))
    return Annotation(names[cls], box, points)  # type: ignore[arg-type]


def read_dataset(data_file: Path) -> tuple[list[AnnotatedImage], list[FileError]]:
    """Every label file of the dataset described by ``data_file`` (a ``data.yaml`` or its folder)."""
    data_file = Path(data_file)
    if data_file.is_dir():
        data_file = data_file / "data.yaml"
    try:
        config = yaml.safe_load(data_file.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a YAML mapping")
        names = _names(config)
        shape = config.get("kpt_shape")
        if shape is None or list(shape)[0] != layout.N_KEYPOINTS or list(shape)[1] not in (2, 3):
            raise ValueError(f"kpt_shape must be [16, 3] (or [16, 2]), got {shape}")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{data_file}: not a readable data.yaml ({getattr(e, 'problem', None) or 'YAML error'}{where})"
                         ) from None
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{data_file}: {' '.join(str(e).split())}") from None
    root = Path(config.get("path") or data_file.parent)
    if not root.is_absolute():
        root = data_file.parent / root
    if not root.is_dir():  # the dataset was moved (the existing system's says /app/...)
        root = data_file.parent
    images, errors = [], []
    for split in ("train", "val", "test"):
        if not config.get(split):
            continue
        image_dir = root / str(config[split])
        label_dir = Path(str(image_dir).replace("/images/", "/labels/").replace("/images", "/labels")) \
            if "images" in image_dir.parts else image_dir
        for label in sorted(label_dir.glob("*.txt")) if label_dir.is_dir() else []:
            try:
                anns = [parse_line(line, names, int(shape[1])) for line in label.read_text().splitlines()
                        if line.strip()]
            except (OSError, UnicodeDecodeError, ValueError) as e:
                errors.append(FileError(str(label), str(e)))
                continue
            photo = next((image_dir / (label.stem + s) for s in IMAGE_SUFFIXES + tuple(x.upper() for x in IMAGE_SUFFIXES)
                          if (image_dir / (label.stem + s)).exists()), None)
            images.append(AnnotatedImage(photo.name if photo else label.stem, anns, split=split))
    return images, errors


def format_line(ann: Annotation) -> str:
    """One label line: class, box and 16 x ``x y visibility``; does and fawns (and points not annotated)
    get ``0 0 0``, since ultralytics refuses a pose label file whose lines differ in length (the
    existing system's box-only doe lines made it drop those photos as corrupt)."""
    cls = CLASSES.index(ann.classification)
    parts = [str(cls)] + [f"{v:.6f}" for v in ann.box]
    pts = {p.index: p for p in ann.points} if ann.classification == "buck" else {}
    for i in range(layout.N_KEYPOINTS):
        p = pts.get(i)
        parts += [f"{p.x:.6f}", f"{p.y:.6f}", str(p.visibility)] if p and p.visibility > 0 else ["0", "0", "0"]
    return " ".join(parts)


def write_dataset(root: Path, images: list[tuple[AnnotatedImage, Path | None]]) -> Path:
    """Write ``labels/<split>/`` (and copy the photo into ``images/<split>/`` when given) and
    ``data.yaml``; returns the yaml's path. Bucks carry 16 keypoints, does and fawns all ``0 0 0``."""
    import shutil

    root = Path(root)
    splits = sorted({img.split or "train" for img, _ in images} | {"train", "val"},
                    key=lambda s: ("train", "val", "test").index(s) if s in ("train", "val", "test") else 9)
    for img, photo in images:
        split = img.split or "train"
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        stem = Path(img.key).stem
        (root / "labels" / split / f"{stem}.txt").write_text("".join(format_line(a) + "\n" for a in img.annotations))
        if photo is not None:
            shutil.copyfile(photo, root / "images" / split / (stem + Path(photo).suffix))
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump(data_yaml(root, tuple(splits)), sort_keys=False))
    return out
