"""Synthetic camera uploads: photos of a generated data set dropped into an upload folder the way a
camera would (``<upload>/<camera>/<photo>.jpg``), with a ``detections.json`` standing in for the
detector (no detector weights can be downloaded here) and without any person's labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def split_photos(data_dir: Path, n_upload: int) -> tuple[list[str], list[str]]:
    """(photos imported first, the last ``n_upload`` photos that carry deer): relative paths of a
    generated data set, so the later upload shows the same individuals."""
    doc = json.loads((data_dir / "detections.json").read_text())
    with_deer = [e["file"] for e in doc["images"] if e["detections"]]
    later = set(with_deer[-n_upload:]) if n_upload else set()
    return [e["file"] for e in doc["images"] if e["file"] not in later], [f for f in with_deer if f in later]


def drop_photos(data_dir: Path, files: list[str], upload_dir: Path, *, camera: str = "cam01",
                sidecar_first: bool = True) -> list[Path]:
    """Copy ``files`` (relative to ``data_dir``) into ``upload_dir/camera/``, their detections (labels
    removed) into ``upload_dir/detections.json`` (merged with entries already there); returns the
    copied photos. The sidecar is written before the photos, as a detector's output would exist
    before the sensor looks."""
    doc = json.loads((data_dir / "detections.json").read_text())
    wanted = set(files)
    sidecar = upload_dir / "detections.json"
    out = json.loads(sidecar.read_text()) if sidecar.exists() else {"format": doc["format"], "images": []}
    for entry in doc["images"]:
        if entry["file"] in wanted:
            dets = [{k: v for k, v in d.items() if k != "label"} for d in entry["detections"]]
            out["images"].append({**entry, "file": f"{camera}/{Path(entry['file']).name}", "camera": camera,
                                  "detections": dets})
    copied = []
    upload_dir.mkdir(parents=True, exist_ok=True)
    if sidecar_first:
        sidecar.write_text(json.dumps(out))
    for rel in files:
        target = upload_dir / camera / Path(rel).name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")  # written under a temporary name, then renamed
        shutil.copyfile(data_dir / rel, tmp)
        tmp.rename(target)
        copied.append(target)
    if not sidecar_first:
        sidecar.write_text(json.dumps(out))
    return copied
