"""Label Studio: the labeling config for the 16 antler points, and its JSON export in and out.

An export is a JSON list of tasks; each task has ``data.image`` (the photo) and ``annotations``,
each with a ``result`` list of regions: ``rectanglelabels`` (the animal: buck / doe / fawn, ``x``,
``y`` = top-left, ``width``, ``height`` in percent of the photo) and ``keypointlabels`` (one antler
point, ``x``/``y`` in percent), with ``original_width``/``original_height`` in pixels, whatever the
controls are named (``label``/``keypoints`` here, ``bbox``/``antler_points`` in the existing system's
project). Other regions (``choices``, ``textarea``, rectangles of other labels such as its ``markings``
``white_patch``) are not animals and are passed over. A keypoint belongs to the buck box that contains
it (the smallest when boxes overlap), else to the nearest buck box (an antler tip drawn just above the
box); when that buck has the point already, to the next one (two bucks sparring: without Label Studio
relations, overlapping bucks' points can be swapped). An annotated point is visible (2). The newest
annotation of a task is used; a task or file that cannot be read is reported in one line and the rest
goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

from deer_reid_assets.core.antlers import layout
from deer_reid_assets.core.antlers.annotations import CLASSES, AnnotatedImage, Annotation, FileError, RelPoint

BOX_FROM, POINT_FROM, TO_NAME = "label", "keypoints", "image"


def labeling_config() -> str:
    """The Label Studio labeling interface: a box per animal and the 16 named antler points."""
    colours = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6")
    boxes = "\n".join(f'    <Label value="{c}"/>' for c in CLASSES)
    points = "\n".join(f'    <Label value="{name}" background="{colours[i % len(colours)]}"/>'
                       for i, name in enumerate(layout.KEYPOINT_NAMES))
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name="{BOX_FROM}" toName="{TO_NAME}">\n{boxes}\n  </RectangleLabels>\n'
            f'  <KeyPointLabels name="{POINT_FROM}" toName="{TO_NAME}" smart="false">\n{points}\n'
            f'  </KeyPointLabels>\n</View>\n')


def image_key(ref: str) -> str:
    """A task's photo reference (``/data/upload/3/ab12cd-IMG_0001.JPG``, a URL, a local-files
    ``/data/local-files/?d=dir/IMG_0001.JPG``) -> its file name."""
    ref = str(ref)
    if "?d=" in ref:
        ref = ref.split("?d=", 1)[1].split("&")[0]
    return unquote(ref.split("?")[0].rstrip("/").rsplit("/", 1)[-1])


def _task(task: dict) -> AnnotatedImage:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict) or "image" not in task["data"]:
        raise ValueError("task without data.image")
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        raise ValueError("no annotation")
    latest = max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
    anns: list[tuple[Annotation, tuple[float, float, float, float]]] = []
    points, width, height = [], None, None
    for region in latest.get("result") or []:
        kind, value = region.get("type"), region.get("value") or {}
        width = region.get("original_width", width)
        height = region.get("original_height", height)
        if kind == "rectanglelabels":
            label = (value.get("rectanglelabels") or [None])[0]
            if label not in CLASSES:
                continue  # not an animal: a marking (white_patch, ...) or another control's rectangle
            x, y, w, h = (float(value[k]) / 100.0 for k in ("x", "y", "width", "height"))
            if w <= 0 or h <= 0:
                raise ValueError(f"box of zero size at ({x:.3f}, {y:.3f})")
            anns.append((Annotation(label, (x + w / 2, y + h / 2, w, h)), (x, y, x + w, y + h)))
        elif kind == "keypointlabels":
            name = (value.get("keypointlabels") or [None])[0]
            if name not in layout.KEYPOINT_NAMES:
                raise ValueError(f"keypoint label {name!r} is not one of the 16 antler points")
            points.append(RelPoint(layout.KEYPOINT_NAMES.index(name), float(value["x"]) / 100.0,
                                   float(value["y"]) / 100.0, 2))
    for p in points:
        bucks = [(a, b) for a, b in anns if a.classification == "buck"]
        if not bucks:
            raise ValueError(f"keypoint {layout.KEYPOINT_NAMES[p.index]} but no buck box in the task")
        # containing boxes first (smallest first), then the others by distance; the first without this point yet
        ranked = sorted(bucks, key=lambda ab: (_distance(p, ab[1]), (ab[1][2] - ab[1][0]) * (ab[1][3] - ab[1][1])))
        owner = next((a for a, _ in ranked if all(q.index != p.index for q in a.points)), None)
        if owner is None:
            raise ValueError(f"keypoint {layout.KEYPOINT_NAMES[p.index]} given more often than there are buck boxes")
        owner.points.append(p)
    for a, _ in anns:
        a.points.sort(key=lambda q: q.index)
    return AnnotatedImage(image_key(task["data"]["image"]), [a for a, _ in anns], width=width, height=height)


def _distance(p: RelPoint, box: tuple[float, float, float, float]) -> float:
    dx = max(box[0] - p.x, 0.0, p.x - box[2])
    dy = max(box[1] - p.y, 0.0, p.y - box[3])
    return (dx * dx + dy * dy) ** 0.5


def read_export(path: Path) -> tuple[list[AnnotatedImage], list[FileError]]:
    """Tasks of a Label Studio JSON export (a file, or a folder of ``*.json`` exports)."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    images, errors = [], []
    for f in files:
        try:
            tasks = json.loads(f.read_text())
            if isinstance(tasks, dict):
                tasks = [tasks]
            if not isinstance(tasks, list):
                raise ValueError("not a list of tasks")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            errors.append(FileError(str(f), f"not a Label Studio JSON export ({e})"))
            continue
        for n, task in enumerate(tasks):
            try:
                images.append(_task(task))
            except (KeyError, TypeError, ValueError) as e:
                ref = task.get("id", n) if isinstance(task, dict) else n
                errors.append(FileError(f"{f} task {ref}", str(e) if not isinstance(e, KeyError) else f"missing {e}"))
    return images, errors


def to_tasks(images: list[AnnotatedImage], image_url: str = "/data/local-files/?d=") -> list[dict]:
    """An importable Label Studio task list with the annotations (the inverse of ``read_export``)."""
    tasks = []
    for n, img in enumerate(images, start=1):
        result = []
        size = {k: v for k, v in (("original_width", img.width), ("original_height", img.height)) if v}
        for k, a in enumerate(img.annotations):
            cx, cy, w, h = a.box
            result.append({"id": f"b{n}-{k}", "type": "rectanglelabels", "from_name": BOX_FROM, "to_name": TO_NAME,
                           **size, "value": {"x": (cx - w / 2) * 100, "y": (cy - h / 2) * 100, "width": w * 100,
                                             "height": h * 100, "rotation": 0, "rectanglelabels": [a.classification]}})
            for p in a.points:
                if p.visibility > 0:
                    result.append({"id": f"k{n}-{k}-{p.index}", "type": "keypointlabels", "from_name": POINT_FROM,
                                   "to_name": TO_NAME, **size,
                                   "value": {"x": p.x * 100, "y": p.y * 100, "width": 0.5,
                                             "keypointlabels": [layout.KEYPOINT_NAMES[p.index]]}})
        tasks.append({"id": n, "data": {"image": image_url + img.key}, "annotations": [{"id": n, "result": result}]})
    return tasks
