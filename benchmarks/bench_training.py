"""Training of the deer-specific model on the demo's synthetic data: speed and what it learns.

    .venv/bin/python benchmarks/bench_training.py [--profile cpu|full] [--epochs N] [--device auto]

Generates the demo's data set (600 photos, 36 deer), crops every detection into
``<tmp>/<deer>/<n>.jpg`` and runs the real-data check on it (:mod:`core.reid.crops_check`): whole
deer held out, the rest trained on. Prints one line per epoch (validation figures of the training
deer, images/s), then the table of untrained vs trained features on the held-out deer, then one JSON
object per line (``{"name", "value", "unit", "device"}``). A script, not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench_pipeline import machine
from figures import emit

from deer_reid_assets.core.embed.device import resolve_device
from deer_reid_assets.core.ingest.imaging import clamp_box, crop, load_image
from deer_reid_assets.core.reid import crops_check
from deer_reid_assets.core.reid.config import TrainConfig
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset


def crops_folder(home: Path) -> Path:
    data = generate_dataset(home / "data", SyntheticConfig(n_images=600, n_bucks=24, n_does=12))
    sidecar = json.loads(data.detections_file.read_text())
    truth = json.loads(data.ground_truth_file.read_text())["detections"]
    out = home / "crops"
    for entry in sidecar["images"]:
        image = load_image(data.root / entry["file"])
        for det in entry["detections"]:
            folder = out / truth[det["key"]]["deer"]
            folder.mkdir(parents=True, exist_ok=True)
            crop(image, clamp_box(det["bbox"], image.size)).save(folder / f"{len(list(folder.iterdir())):04d}.jpg")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=["cpu", "full"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="deer_reid_train_bench_"))
    try:
        folder = crops_folder(home)
        overrides = {"epochs": args.epochs} if args.epochs else {}
        config = TrainConfig.profile(args.profile, **overrides, backbone_weights="random")
        device = resolve_device(args.device)
        print(f"machine: {machine()}")
        print(f"profile {args.profile}: {config.arch} at {config.image_size} px, batches of {config.p} x {config.k}, "
              f"{config.batches_per_epoch} batches/epoch, device {device}, seeded random start (NOT pretrained)")
        rows = []

        def line(log) -> None:
            rows.append(log)
            print(f"epoch {log.epoch}: val rank-1 {log.val_rank1:.3f}, mAP {log.val_mAP:.3f}, loss {log.loss:.3f}, "
                  f"different-deer cosine {log.different_cosine:.2f}, {log.images_per_s:.1f} images/s, "
                  f"{log.seconds:.1f} s", flush=True)

        started = time.perf_counter()
        check = crops_check.run(folder, config, home / "run", device=device, progress=line)
        seconds = time.perf_counter() - started
        print(check.summary())
        print(f"guard: {check.result.guard_message}\n")
        print(check.table())
        untrained = check.result.history[0]
        metrics = [
            ("val_rank1_untrained", untrained.val_rank1, "ratio"),
            *[(f"val_rank1_epoch{log.epoch}", log.val_rank1, "ratio") for log in rows],
            *[(f"val_mAP_epoch{log.epoch}", log.val_mAP, "ratio") for log in rows],
            *[(f"{k}_{name}", fig[k], "ratio") for name, fig in (("untrained", check.untrained), ("trained", check.trained))
              for k in ("rank1", "mAP", "assignment_rate")],
            ("training_images_per_s", sum(r.images_per_s for r in rows) / max(1, len(rows)), "images/s"),
            ("total_seconds", seconds, "s"),
        ]
        where = machine()
        for name, value, unit in metrics:
            emit(name, value, unit, where)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
