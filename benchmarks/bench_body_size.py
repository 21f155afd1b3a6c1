"""How well the measured body size class follows the synthetic deer's true size (not a test).

    .venv/bin/python benchmarks/bench_body_size.py [--data DIR] [--images 600 --bucks 24 --does 12]

Generates the demo's photos into ``--data`` (or reads the folder when it holds them already),
measures every labelled deer's body size from its labelled boxes exactly as the ``physical_features``
asset does (``core/marks/body_size.py``: relative box height per camera, median per deer, vs its sex's
median), and compares with the generator's truth: each individual's body length (``length``, the size
its drawing is scaled by). Prints per sex the rank correlation of measured relative height with true
length, and the agreement of the measured class with the class the same rule gives from true lengths.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from figures import emit

from deer_reid_assets.core.marks.body_size import Box, SizeSettings, measure
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset


def _ranks(values: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--bucks", type=int, default=24)
    parser.add_argument("--does", type=int, default=12)
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="deer_reid_body_size_"))
    if not (data / "detections.json").exists():
        generate_dataset(data, SyntheticConfig(n_images=args.images, n_bucks=args.bucks, n_does=args.does,
                                               labelled_fraction=0.9))
    sidecar = json.loads((data / "detections.json").read_text())
    truth = json.loads((data / "ground_truth.json").read_text())
    length = {i["name"]: i["body_length"] for i in truth["individuals"]}
    sexes = {i["name"]: i["sex"] for i in truth["individuals"]}
    boxes = [Box(d["key"], image["camera"], d["bbox"]["y"] + d["bbox"]["height"], d["bbox"]["height"],
                 d["classification"], d.get("label"), "label" in d)
             for image in sidecar["images"] for d in image["detections"]]
    settings = SizeSettings()
    measured = measure(boxes, sexes, settings)
    hunter = json.loads((data / "marks" / "recorded_marks.json").read_text())["deer"]
    print(f"{len(boxes)} boxes, {len(measured)} labelled deer measured; the hunter recorded the marks of "
          f"{len(hunter)} deer; {settings.method()}")
    print("| sex | deer | measured small/medium/large | rank correlation (measured vs true length) | class agreement | "
          "small <-> large swaps |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for sex in ("buck", "doe"):
        names = sorted(n for n, m in measured.items() if sexes[n] == sex and m.get("relative_height") is not None)
        if len(names) < 3:
            continue
        rel = [measured[n]["relative_height"] for n in names]
        true = [length[n] for n in names]
        rho = float(np.corrcoef(_ranks(rel), _ranks(true))[0, 1])
        median = float(np.median(true))
        true_class = {n: "small" if length[n] / median < 1 - settings.margin else
                      "large" if length[n] / median > 1 + settings.margin else "medium" for n in names}
        agree = np.mean([measured[n]["class"] == true_class[n] for n in names])
        swaps = sum({measured[n]["class"], true_class[n]} == {"small", "large"} for n in names)
        counts = "/".join(str(sum(measured[n]["class"] == c for n in names)) for c in ("small", "medium", "large"))
        print(f"| {sex} | {len(names)} | {counts} | {rho:.2f} | {agree:.2f} | {swaps} |")
        emit(f"body_size_rank_correlation_{sex}", rho, "spearman", "cpu")
        emit(f"body_size_class_agreement_{sex}", agree, "fraction", "cpu")


if __name__ == "__main__":
    main()
