"""How much of the model's raw forward throughput the embedding data path delivers, per family.

    .venv/bin/python benchmarks/bench_embed.py [--crops 256] [--batch-size 32|128] [--device auto]
                                               [--image-size 224] [--workers N] [--families resnet50,...]

For each pretrained family (ResNet50, multi-scale ResNet50, EfficientNet-B0) it times:

* **raw forward**: the backbone on a batch already on the device (normalised, channels_last and fp16
  autocast on CUDA): the ceiling;
* **files, end to end**: what ``deer-reid embed`` and the embedding assets run
  (``Embedder.raw_feature_batches``): JPEG crop files decoded and resized in loader workers (pinned
  memory, asynchronous copy, normalisation on the device), forward, features back on the host;
* **in-memory images**: ``Embedder.raw_features`` on decoded PIL images (resize + stacking in the
  calling process), the path that was measured at 5% of the raw forward on an H100.

The crops are synthetic JPEGs (smooth colour fields with grain, 160-640 px a side, like deer boxes
cut from trail-camera photos) written to a temporary folder; weights are seeded random (the time of
a forward pass does not depend on the weights' values). It also projects the time to re-embed the
seed database's 6,982 detections with all three models from the measured end-to-end rates; with
``--through-database N`` it also measures that for real on N synthetic photos: a throw-away embedded
PostgreSQL (or ``DATABASE_URL``), crops cut, then ``versions.embed_crops`` for the three families
(projection fit on its 1,500-crop sample, vectors written to the database in committed chunks), which
is what ``deer-reid embed`` runs: there the multi-scale family takes the baseline's ResNet50 pass
(``core/embed/shared_trunk.py``), while the per-family rates above are each family's own pass. Prints a
table, then one JSON object per figure. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_pipeline import machine
from figures import emit
from PIL import Image

from deer_reid_assets.core import families
from deer_reid_assets.core.embed.device import resolve_device
from deer_reid_assets.core.embed.embedder import Embedder
from deer_reid_assets.core.embed.loading import default_workers
from deer_reid_assets.core.embed.shared_trunk import StageMemo
from deer_reid_assets.core.ingest.imaging import load_image

SEED_DETECTIONS = 6982  # detections in the user's seed database (issue 15)


def write_crops(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(160, 641, size=2))
        base = rng.integers(40, 200, size=(max(2, h // 40), max(2, w // 40), 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, size=(h, w, 3))
        path = folder / f"crop_{i:05d}.jpg"
        Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def raw_forward_rate(embedder: Embedder, batch_size: int, repeats: int) -> float:
    """Images/s of the backbone alone on a normalised batch already on the device."""
    size = embedder.image_size
    x = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, device=embedder.device)
    with torch.inference_mode():
        embedder._forward(x)  # warm-up (cuDNN autotuning, allocator)
        sync(embedder.device)
        started = time.perf_counter()
        for _ in range(repeats):
            embedder._forward(x)
        sync(embedder.device)
    return batch_size * repeats / (time.perf_counter() - started)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def shared_pass(paths: list[Path], args: argparse.Namespace, device: str, batch: int, workers: int
                ) -> tuple[float, float, float]:
    """(baseline s, multi-scale s taking the baseline's pass, largest difference from the multi-scale
    family's own features) over ``paths``, one fresh memo (``core/embed/shared_trunk.py``)."""
    memo = StageMemo()
    embedders = {}
    for name in ("resnet50", "multiscale"):
        embedders[name] = Embedder(name, "random", image_size=args.image_size, device=device, batch_size=batch,
                                   loader_workers=workers)
        embedders[name].memo = memo
    first = timed(lambda: embedders["resnet50"].raw_features_files(paths))
    taken: list[np.ndarray] = []
    second = timed(lambda: taken.append(embedders["multiscale"].raw_features_files(paths)))
    embedders["multiscale"].memo = StageMemo(max_bytes=0)
    own = embedders["multiscale"].raw_features_files(paths)
    return first, second, float(np.abs(taken[0] - own).max())


def through_database(n_photos: int, args: argparse.Namespace, device: str, batch: int, workers: int
                     ) -> tuple[int, dict[str, float]]:
    """(detections, seconds per family) of embed_crops on a fresh database of ``n_photos`` synthetic photos."""
    from deer_reid_assets.core.embed import versions
    from deer_reid_assets.core.ingest import crops
    from deer_reid_assets.core.ingest import importer as ingest
    from deer_reid_assets.core.store import db, migrations
    from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset

    home = Path(tempfile.mkdtemp(prefix="deer_reid_bench_embed_db_"))
    server = None
    try:
        url = os.environ.get("DATABASE_URL")
        if not url:
            server = db.EmbeddedPostgres(home)
            url = server.start()
        engine = db.make_engine(url)
        migrations.migrate(engine)
        data = generate_dataset(home / "data", SyntheticConfig(n_images=n_photos, seed=5))
        ingest.import_sidecar_folder(engine, data.root)
        n = crops.make_crops(engine, home / "store").ok
        seconds = {}
        for name in families.PRETRAINED:
            embedder = Embedder(name, "random", image_size=args.image_size, device=device, batch_size=batch,
                                loader_workers=workers)
            seconds[name] = timed(lambda e=embedder: versions.embed_crops(engine, e, artifacts=home / "artifacts",
                                                                          refit=True))
        return n, seconds
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=None, help="crop files (default 2048 on a GPU, 128 on a CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 128 on a GPU, 32 on a CPU")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: the embedders' own)")
    parser.add_argument("--families", default=",".join(families.PRETRAINED))
    parser.add_argument("--crops-dir", type=Path, default=None,
                        help="use the first --crops image files under this folder (e.g. real labelled crops, "
                        "DIR/<animal>/<photo>) instead of synthetic ones")
    parser.add_argument("--through-database", type=int, default=0, metavar="PHOTOS",
                        help="also time embed_crops of the three families on this many synthetic photos "
                        "(about 1.1 detections each; 6400 is about the seed database's 6,982 detections)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    n = args.crops or (2048 if cuda else 128)
    batch = args.batch_size or (128 if cuda else 32)
    workers = default_workers(device) if args.workers is None else args.workers
    where = machine()
    names = [f.strip() for f in args.families.split(",") if f.strip()]
    folder = Path(tempfile.mkdtemp(prefix="deer_reid_bench_embed_"))
    rows, precision = [], "?"
    try:
        if args.crops_dir is not None:
            paths = sorted(p for p in args.crops_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
            if not paths:
                raise SystemExit(f"--crops-dir {args.crops_dir}: no .jpg/.jpeg/.png files")
            n = len(paths)
        else:
            paths = write_crops(folder, n)
        for name in names:
            embedder = Embedder(name, "random", image_size=args.image_size, device=device, batch_size=batch,
                                loader_workers=workers)
            embedder.memo = StageMemo(max_bytes=0)  # each family's own rate: no pass shared between the two ResNet50s
            raw = raw_forward_rate(embedder, batch, repeats=max(2, min(20, n // batch)))
            embedder.raw_features_files(paths[: batch * 2])  # warm-up of the file path (and its workers)
            files = n / timed(lambda e=embedder: e.raw_features_files(paths))
            images = [load_image(p) for p in paths]
            in_memory = n / timed(lambda e=embedder, im=images: e.raw_features(im))
            rows.append((name, raw, files, in_memory))
            precision = embedder.precision
        shared = shared_pass(paths, args, device, batch, workers) if {"resnet50", "multiscale"} <= set(names) else None
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    source = f"from {args.crops_dir}" if args.crops_dir else "(160-640 px JPEG)"
    print(f"\n{n} crop files {source}, {args.image_size} px, batch {batch}, {workers} loader worker(s), "
          f"seeded random weights, device {device}, forward in {precision}")
    print(f"machine: {where}\n")
    print("| family | raw forward img/s | files end to end img/s | ratio | in-memory PIL img/s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, raw, files, in_memory in rows:
        print(f"| {name} | {raw:.0f} | {files:.0f} | {files / raw:.2f} | {in_memory:.0f} | {in_memory / raw:.2f} |")
    projected = sum(SEED_DETECTIONS / files for _, _, files, _ in rows)
    print(f"\nre-embedding {SEED_DETECTIONS} detections with {', '.join(names)}: {projected:.1f} s "
          "(projected from the end-to-end rates above; database writes not included)\n")
    for name, raw, files, in_memory in rows:
        emit(f"{name} raw forward", raw, "images/s", where)
        emit(f"{name} end to end from files", files, "images/s", where)
        emit(f"{name} end to end / raw forward", files / raw, "ratio", where)
        emit(f"{name} in-memory PIL path", in_memory, "images/s", where)
    emit(f"re-embed {SEED_DETECTIONS} detections, {len(rows)} models (projected)", projected, "s", where)
    if shared is not None:
        first, second, diff = shared
        print(f"\nshared ResNet50 pass over the same {n} files: baseline {first:.1f} s, then multi-scale "
              f"{second:.2f} s from the baseline's stages (largest difference from its own pass {diff:.1e})")
        emit("baseline then multi-scale, shared pass: multi-scale", n / second, "images/s", where)
        emit("shared pass: largest difference from the family's own features", diff, "abs", where)
    if args.through_database:
        n_det, seconds = through_database(args.through_database, args, device, batch, workers)
        print(f"\nthrough the database ({n_det} detections, projection fit + writes included):")
        for name, sec in seconds.items():
            print(f"  {name}: {sec:.1f} s ({n_det / sec:.0f} detections/s)")
        print(f"  all three: {sum(seconds.values()):.1f} s")
        for name, sec in seconds.items():
            emit(f"embed_crops {name}, {n_det} detections", sec, "s", where)
        emit(f"embed_crops all three models, {n_det} detections", sum(seconds.values()), "s", where)


if __name__ == "__main__":
    main()
