"""Synthetic detections for the cost curve (`bench_scale.py`): unit vectors, no images.

Each deer has a centre: a unit vector drawn near one of a few "family" directions (so some deer
resemble each other and the nearest profiles are close, as siblings are); each detection is its
deer's centre plus Gaussian noise, renormalised. Written into the real database through the store
layer's tables (`core/store/schema.py`) in chunks, so building 100k detections never holds them all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

from deer_reid_assets.core.store import schema as t

DIM = t.EMBEDDING_DIM
VERSION = "scale-r50"
FAMILY = "resnet50"
T0 = datetime(2026, 9, 1, tzinfo=UTC)


@dataclass(frozen=True)
class World:
    detections: int
    profiles: int
    labelled_fraction: float = 0.5  # reviewed and named: what profiles are built from; the rest is matched
    noise: float = 1.2  # norm of a detection's noise relative to its deer's centre
    family_spread: float = 0.8  # how far a deer's centre lies from its family direction
    seed: int = 0

    def centres(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        n_families = max(1, self.profiles // 20)
        families = _unit(rng.standard_normal((n_families, DIM)))
        own = _unit(rng.standard_normal((self.profiles, DIM)))
        return _unit(families[rng.integers(0, n_families, self.profiles)] + self.family_spread * own)

    def chunk(self, centres: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(deer index, labelled?, unit vector) of detections ``start..stop-1``; the same for any chunking."""
        rng = np.random.default_rng([self.seed, start])
        deer = rng.integers(0, self.profiles, stop - start)
        labelled = rng.random(stop - start) < self.labelled_fraction
        noise = rng.standard_normal((stop - start, DIM)) * (self.noise / np.sqrt(DIM))
        return deer, labelled, _unit(centres[deer] + noise).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(engine: sa.Engine, world: World, *, chunk: int = 5000, progress=print) -> dict[str, str]:
    """Deer, images, detections and one embedding version for ``world``; returns {deer id: sex}."""
    centres = world.centres()
    sexes = ["buck" if i % 2 == 0 else "doe" for i in range(world.profiles)]
    deer_ids = [str(uuid.uuid4()) for _ in range(world.profiles)]
    with engine.begin() as conn:
        conn.execute(sa.insert(t.deer), [{"id": d, "name": f"deer-{i:05d}", "sex": s}
                                         for i, (d, s) in enumerate(zip(deer_ids, sexes))])
        conn.execute(sa.insert(t.reid_embedding_versions).values(
            version=VERSION, model_family=FAMILY, weights_source="synthetic", weights_id="scale-benchmark",
            weights_description="synthetic unit vectors (no model)", config={}, status="complete",
            n_embeddings=world.detections))
    for start in range(0, world.detections, chunk):
        stop = min(start + chunk, world.detections)
        deer, labelled, vectors = world.chunk(centres, start, stop)
        images, detections, embeddings = [], [], []
        for k in range(stop - start):
            n, image, det = start + k, str(uuid.uuid4()), str(uuid.uuid4())
            who = int(deer[k])
            images.append({"id": image, "filename": f"s{n}.jpg", "path": f"/scale/s{n}.jpg",
                           "timestamp": T0 + timedelta(minutes=n), "processing_status": "completed"})
            detections.append({"id": det, "image_id": image, "bbox": {"x": 0, "y": 0, "width": 64, "height": 64},
                               "confidence": 0.9, "classification": sexes[who] if n % 10 else "unknown",
                               "deer_id": deer_ids[who] if labelled[k] else None,
                               "is_reviewed": bool(labelled[k])})
            embeddings.append({"version": VERSION, "detection_id": det, "embedding": vectors[k]})
        with engine.begin() as conn:
            conn.execute(sa.insert(t.images), images)
            conn.execute(sa.insert(t.detections), detections)
            conn.execute(sa.insert(t.reid_embeddings), embeddings)
        progress(f"  wrote {stop:,} / {world.detections:,} detections")
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    return dict(zip(deer_ids, sexes))
