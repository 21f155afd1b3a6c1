"""Per-detection time of crop + embed + match + database write, batched, on this machine.

    .venv/bin/python benchmarks/bench_pipeline.py [--images 200] [--image-size 224] [--batch-size 32]

Runs against a throw-away embedded PostgreSQL on synthetic photos, with seeded random weights
(the time of a forward pass does not depend on the weights' values). Prints a table and the
machine it ran on; nothing here is a test. Ends with one JSON object per figure. Each model runs its
own forward pass here (in the pipeline the multi-scale family takes the baseline's ResNet50 pass when
both run in one process: ``core/embed/shared_trunk.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from figures import emit

from deer_reid_assets.core import matching
from deer_reid_assets.core.embed import versions as embeddings
from deer_reid_assets.core.embed.embedder import Embedder
from deer_reid_assets.core.embed.shared_trunk import StageMemo
from deer_reid_assets.core.ingest import crops
from deer_reid_assets.core.ingest import importer as ingest
from deer_reid_assets.core.store import db, migrations
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="deer_reid_bench_"))
    server = db.EmbeddedPostgres(home)
    try:
        url = server.start()
        engine = db.make_engine(url)
        migrations.migrate(engine)
        data = generate_dataset(home / "data", SyntheticConfig(n_images=args.images, seed=5))
        ingest.import_sidecar_folder(engine, data.root)
        rows = {}

        t0 = time.perf_counter()
        report = crops.make_crops(engine, home / "store")
        n = report.ok
        rows["crop (decode photo, crop, write JPEG + row)"] = time.perf_counter() - t0

        versions = {}
        for family in ("resnet50", "multiscale", "efficientnet"):
            embedder = Embedder(family, "random", image_size=args.image_size, device=args.device,
                                batch_size=args.batch_size)
            embedder.memo = StageMemo(max_bytes=0)  # each model's own cost: multi-scale runs its own ResNet50 pass
            t0 = time.perf_counter()
            emb = embeddings.embed_crops(engine, embedder, artifacts=home / "artifacts", sample_size=n)
            total = time.perf_counter() - t0
            rows[f"embed {family}: model forward only"] = emb.raw_forward_seconds
            rows[f"embed {family}: load crops + forward + PCA fit + DB write"] = total
            embeddings.publish(engine, emb.version, require_audit=False)  # timing only, no audit
            versions[family] = emb.version

        t0 = time.perf_counter()
        matching.build_profiles(engine, versions["resnet50"], "resnet50")
        assign = matching.assign_detections(engine, versions["resnet50"])
        rows["match baseline (profiles + pgvector top-k + writes)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for family in ("multiscale", "efficientnet"):
            matching.build_profiles(engine, versions[family], family)
        matching.assign_detections(engine, {versions["multiscale"]: 0.6, versions["efficientnet"]: 0.4})
        rows["match ensemble 0.6/0.4 (profiles + 2x pgvector top-k + exact combine + writes)"] = time.perf_counter() - t0

        print(f"\nmachine: {machine()}")
        print(f"{n} detections from {args.images} photos, crops resized to {args.image_size} px, "
              f"batch {args.batch_size}, device {embedder.device}; {assign.considered} detections matched\n")
        print("| step | total s | ms per detection |\n|---|---:|---:|")
        for name, seconds in rows.items():
            print(f"| {name} | {seconds:.2f} | {1000 * seconds / n:.1f} |")
        crop = rows["crop (decode photo, crop, write JPEG + row)"]
        paths = {
            "baseline: crop + ResNet50 + match + write": crop
            + rows["embed resnet50: load crops + forward + PCA fit + DB write"]
            + rows["match baseline (profiles + pgvector top-k + writes)"],
            "ensemble: crop + multi-scale + EfficientNet + ensemble match + write": crop
            + rows["embed multiscale: load crops + forward + PCA fit + DB write"]
            + rows["embed efficientnet: load crops + forward + PCA fit + DB write"]
            + rows["match ensemble 0.6/0.4 (profiles + 2x pgvector top-k + exact combine + writes)"],
        }
        for name, seconds in paths.items():
            print(f"| **{name}** | {seconds:.2f} | {1000 * seconds / n:.1f} |")
            rows[name] = seconds
        print()
        for name, seconds in rows.items():
            emit(f"{name} ms/detection", 1000 * seconds / n, "ms", machine())
        if args.json:
            args.json.write_text(json.dumps({"machine": machine(), "detections": n, "seconds": rows}, indent=2))
        engine.dispose()
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
