"""Training throughput of the deer-specific model (images per second), on this machine.

    .venv/bin/python benchmarks/bench_training.py [--profile cpu|full] [--epochs 2] [--device auto]

Trains on crops of a synthetic data set (seeded random backbone: the speed of a step does not
depend on the weights' values) and prints images/s per epoch and the machine. Not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench_pipeline import machine

from deer_reid_assets.core.embed.device import resolve_device
from deer_reid_assets.core.ingest.imaging import clamp_box, crop, load_image
from deer_reid_assets.core.reid.training import TrainConfig, train
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=["cpu", "full"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="deer_reid_train_bench_"))
    try:
        data = generate_dataset(home / "data", SyntheticConfig(seed=5))
        sidecar = json.loads(data.detections_file.read_text())
        truth = json.loads(data.ground_truth_file.read_text())["detections"]
        items = []
        for entry in sidecar["images"]:
            img = load_image(data.root / entry["file"])
            for det in entry["detections"]:
                path = home / "crops" / f"{len(items)}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                crop(img, clamp_box(det["bbox"], img.size)).save(path)
                items.append((path, truth[det["key"]]["deer"]))
        val = [i for n, i in enumerate(items) if n % 5 == 0]
        trn = [i for n, i in enumerate(items) if n % 5 != 0]
        base = TrainConfig.cpu_profile() if args.profile == "cpu" else TrainConfig()
        config = TrainConfig.from_json({**base.to_json(), "epochs": args.epochs, "backbone_weights": "random"})
        device = resolve_device(args.device)
        result = train(trn, val, config, home / "run", device=device)
        print(f"machine: {machine()}")
        print(f"profile {args.profile}: {config.image_size} px, batches of {config.p} x {config.k}, "
              f"{config.batches_per_epoch} batches/epoch, device {device}")
        for epoch in result.history:
            print(f"epoch {epoch.epoch}: {epoch.images_per_s:.1f} images/s (loss {epoch.loss:.3f}, {epoch.seconds:.1f} s)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
