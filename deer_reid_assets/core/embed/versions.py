"""Embedding sets: write (staging), complete, publish, roll back.

An embedding set is a *version*: one model family + weights + fitted projection + image size +
code version. Its vectors go to ``reid_embeddings`` in chunks, each chunk committed, so an
interrupted run resumes where it stopped; the version is ``complete`` only when every usable crop
has a finite unit-norm vector, and only a complete version can be published. Publishing moves the
family's pointer in ``reid_published_embeddings`` in one transaction; old versions are kept.
The SQL is in ``store/embedding_versions.py`` (versions, pointer, locks) and ``store/vectors.py``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa

from deer_reid_assets.core.families import FAMILIES
from deer_reid_assets.core.store import embedding_versions as store
from deer_reid_assets.core.store import schema as t
from deer_reid_assets.core.store import vectors as stored_vectors
from deer_reid_assets.core.store.embedding_versions import (  # noqa: F401  (public names of this module)
    latest_version,
    list_versions,
    newest_version,
    published_version,
    published_versions,
    usable_crops,
)
from deer_reid_assets.core.store.vectors import read_all as load_embeddings  # noqa: F401  (public name)
from deer_reid_assets.core.vectors import UNIT_NORM_TOLERANCE, unit_norm_rows

if TYPE_CHECKING:  # torch is imported only where models run
    from deer_reid_assets.core.embed.embedder import Embedder


class EmbeddingError(RuntimeError):
    """An embedding set that cannot be completed or published; the message says why."""


@dataclass
class EmbedReport:
    version: str
    family: str
    weights_description: str
    new_vectors: int
    total_vectors: int
    resumed: bool
    projection_fitted: bool
    seconds: float
    raw_forward_seconds: float

    @property
    def per_detection_ms(self) -> float:
        return 1000.0 * self.seconds / self.new_vectors if self.new_vectors else 0.0


def version_name(family: str, key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    code = FAMILIES[family].code if family in FAMILIES else family[:5]
    return f"{code}-{digest[:10]}"


def _reusable_version(conn: sa.Connection, family: str, base_key: dict) -> sa.Row | None:
    """The newest non-failed version of the same model, weights, image size and code."""
    for row in store.not_failed(conn, family):
        if {k: row.config.get(k) for k in base_key} == base_key:
            return row
    return None


class EmbeddingBusy(EmbeddingError):
    """Another process is embedding the same model family right now."""


@contextmanager
def family_lock(engine: sa.Engine, family: str, *, wait: bool = True) -> Iterator[None]:
    """Hold the embedding lock of ``family`` (a session-level advisory lock: a killed holder's
    connection closes and frees it). ``wait=False``: EmbeddingBusy at once when someone holds it."""
    with engine.connect() as conn:
        if wait:
            store.lock_family(conn, family)
        elif not store.try_lock_family(conn, family):
            raise EmbeddingBusy(f"another run is embedding {family} right now: rerun when it has finished "
                                "(it resumes where that one stops)")
        conn.commit()
        try:
            yield
        finally:
            try:
                store.unlock_family(conn, family)
                conn.commit()
            except sa.exc.DBAPIError:  # the connection is gone: so is its lock
                pass


def embed_crops(engine: sa.Engine, embedder: Embedder, *, wait: bool = True, **kwargs) -> EmbedReport:
    """Embed every usable crop that the current version of ``embedder``'s model lacks (see
    :func:`_embed_crops`), holding the family's lock: two runs of one family at once take turns (the
    second finds the work done or resumes it) or, with ``wait=False``, the second stops with
    EmbeddingBusy instead of racing the first into duplicate rows."""
    with family_lock(engine, embedder.family, wait=wait):
        return _embed_crops(engine, embedder, **kwargs)


def _embed_crops(engine: sa.Engine, embedder: Embedder, *, artifacts: Path, sample_size: int = 1500,
                 seed: int = 0, chunk: int = 128, refit: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> EmbedReport:
    """The projection is fitted once per model (on a seeded sample of crops) and reused by later runs,
    so new uploads land in the same version; ``refit=True`` starts a new version."""
    started = time.perf_counter()
    family = embedder.family
    base_key = {k: v for k, v in embedder.version_key().items() if k != "projection"}
    with engine.connect() as conn:
        crops = usable_crops(conn)
        existing = None if refit else _reusable_version(conn, family, base_key)
    if not crops:
        raise EmbeddingError("no usable crops to embed: materialize `crops` first (or every crop was rejected)")

    raw_seconds = 0.0
    fitted = False
    written_at_fit = 0
    if existing is not None:
        from deer_reid_assets.core.embed.projection import FeatureProjection

        projection = FeatureProjection.load(Path(existing.config["projection_path"]))
        if projection.fingerprint() != existing.config["projection"]:
            raise EmbeddingError(f"projection artefact of version {existing.version} does not match its fingerprint")
        embedder.projection = projection
        version = existing.version
    else:
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(crops), size=min(sample_size, len(crops)), replace=False))
        t0 = time.perf_counter()
        raw = embedder.raw_features_files([crops[i][1] for i in pick])
        raw_seconds += time.perf_counter() - t0
        projection = embedder.fit_projection(raw)
        fitted = True
        with engine.connect() as conn:
            key, version = _fresh_key(conn, family, embedder.version_key())
        path = artifacts / "projections" / f"{version}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        projection.save(path)
        config = dict(key, projection_path=str(path), projection_sample=len(pick), projection_seed=seed)
        sampled = [crops[i][0] for i in pick]
        with engine.begin() as conn:  # the version and the sample's vectors (already computed) together
            if not store.exists(conn, version):
                store.insert_version(conn, version, family, embedder.weights, config)
                _write_vectors(conn, version, sampled, projection.transform(raw))
                written_at_fit = len(sampled)

    with engine.connect() as conn:
        done = stored_vectors.embedded_ids(conn, version)
    todo = [(d, p) for d, p in crops if d not in done]
    new = 0
    ids: list[str] = []
    parts: list[np.ndarray] = []

    def flush() -> None:
        nonlocal new
        with engine.begin() as conn:  # each chunk commits: an interruption resumes here
            _write_vectors(conn, version, ids, np.concatenate(parts))
        new += len(ids)
        ids.clear()
        parts.clear()
        if progress:
            progress(len(done) + new, len(crops))

    # One loader over every missing crop (decoding in workers on a GPU), written chunk by chunk.
    t0 = time.perf_counter()
    consumed = 0
    for vectors in embedder.embed_batches([p for _, p in todo]):
        parts.append(vectors)
        ids.extend(d for d, _ in todo[consumed : consumed + len(vectors)])
        consumed += len(vectors)
        if len(ids) >= chunk:
            raw_seconds += time.perf_counter() - t0
            flush()
            t0 = time.perf_counter()
            if should_stop is not None and should_stop():
                break
    if ids:
        raw_seconds += time.perf_counter() - t0
        flush()

    total = len(done) + new
    if total == len(crops):
        with engine.begin() as conn:
            store.mark_complete(conn, version, total)
    return EmbedReport(version=version, family=family, weights_description=embedder.weights.description,
                       new_vectors=new + written_at_fit, total_vectors=total, resumed=existing is not None and bool(done),
                       projection_fitted=fitted, seconds=time.perf_counter() - started,
                       raw_forward_seconds=raw_seconds)


def _fresh_key(conn: sa.Connection, family: str, key: dict) -> tuple[dict, str]:
    """(key, version name) for a new version: a failed version is never written to again, so the same
    model after a failed audit gets the next ``attempt`` and thus a new name."""
    attempt, version = 1, version_name(family, key)
    while store.status(conn, version) == "failed":
        attempt += 1
        key = dict(key, attempt=attempt)
        version = version_name(family, key)
    return key, version


def _write_vectors(conn: sa.Connection, version: str, detection_ids: list[str], vectors: np.ndarray) -> None:
    _check_vectors(vectors, version)
    # an upload's run may have added the same crop's vector to this version meanwhile (core/upload_path.py)
    stored_vectors.insert(conn, version, detection_ids, vectors)


def _check_vectors(vectors: np.ndarray, version: str) -> None:
    if vectors.ndim != 2 or vectors.shape[1] != t.EMBEDDING_DIM:
        raise EmbeddingError(f"{version}: model returned shape {vectors.shape}, expected (n, {t.EMBEDDING_DIM})")
    try:
        unit_norm_rows(vectors, "the model's vectors", UNIT_NORM_TOLERANCE)
    except ValueError as exc:
        raise EmbeddingError(f"{version}: {exc}; nothing of this chunk was written") from None


def coverage(conn: sa.Connection, version: str) -> tuple[int, int]:
    """(embedded, usable crops) for ``version``."""
    crops = usable_crops(conn)
    have = stored_vectors.embedded_ids(conn, version)
    return sum(1 for d, _ in crops if d in have), len(crops)


def publish(engine: sa.Engine, versions: str | list[str], *, require_audit: bool = True) -> dict[str, str | None]:
    """Make each of ``versions`` the published set of its family, all in ONE transaction (all or
    nothing). Returns ``{family: version it replaced}``. Refuses a version that is not complete, no
    longer covers every usable crop, or (``require_audit``) has not passed its audit."""
    versions = [versions] if isinstance(versions, str) else list(versions)
    replaced: dict[str, str | None] = {}
    with engine.begin() as conn:
        store.lock_publishing(conn)
        for version in versions:
            row = store.version_for_update(conn, version)
            if row is None:
                raise EmbeddingError(f"no embedding version {version!r}")
            if row.model_family in replaced:
                raise EmbeddingError(f"two versions of {row.model_family} in one publish")
            if row.status == "failed":
                raise EmbeddingError(f"version {version} failed its audit: it cannot be published (kept for inspection)")
            if row.status not in ("complete", "published"):
                raise EmbeddingError(f"version {version} is {row.status}, only a complete version can be published")
            if require_audit and row.audit_passed is not True:
                state = "failed its audit" if row.audit_passed is False else "has not been audited"
                raise EmbeddingError(f"version {version} {state}: it cannot be published")
            if require_audit and (row.audit or {}).get("promotable") is False:
                raise EmbeddingError(f"version {version} does not beat the published configuration: not published")
            embedded, total = coverage(conn, version)
            if embedded != total:
                raise EmbeddingError(f"version {version} covers {embedded} of {total} usable crops: embed the rest first")
            previous = published_version(conn, row.model_family)
            if previous and previous != version:
                store.unpublish(conn, previous)
            store.point_published(conn, row.model_family, version)
            replaced[row.model_family] = previous
    return replaced


def publish_passed(engine: sa.Engine) -> list[dict[str, str]]:
    """Publish, in one transaction, every family whose newest version passed its audit (and, for an
    A/B-tested family, beat the published configuration); a version that failed or was never audited is
    refused and the published one stays. One row per family says what happened; EmbeddingError when no
    family has anything published afterwards."""
    rows, to_publish = [], []
    with engine.connect() as conn:
        for family in FAMILIES:
            latest = newest_version(conn, family)  # a failed one included: it is reported, not skipped
            current = published_version(conn, family)
            row = {"family": family, "published": current or "none", "newest": latest.version if latest else "none"}
            if latest is None:
                row["action"] = "nothing to publish"
            elif latest.audit_passed is not True:
                row["action"] = "kept: newest " + ("failed its audit" if latest.audit_passed is False else "not audited")
            elif (latest.audit or {}).get("promotable") is False:
                row["action"] = "kept: newest does not beat the published configuration (A/B)"
            elif latest.version == current:
                row["action"] = "already published"
            else:
                to_publish.append(latest.version)
                row.update(published=latest.version, action=f"published (was {current or 'none'})")
            rows.append(row)
    if to_publish:
        publish(engine, to_publish)
    if not any(r["published"] != "none" for r in rows):
        raise EmbeddingError("no embedding version has passed its audit yet: nothing is published")
    return rows


def rollback(engine: sa.Engine, version: str) -> list[dict[str, str]]:
    """Publish ``version`` again (complete and audited, as :func:`publish` requires); one row per family
    in the shape :func:`publish_passed` returns."""
    family, previous = next(iter(publish(engine, version).items()))
    rows = []
    with engine.connect() as conn:
        for name in FAMILIES:
            latest = latest_version(conn, name)
            rows.append({"family": name, "published": published_version(conn, name) or "none",
                         "newest": latest.version if latest else "none",
                         "action": f"rolled back to {version} (was {previous or 'none'})" if name == family
                         else "unchanged"})
    return rows


def record_audit(engine: sa.Engine, version: str, passed: bool, audit: dict) -> None:
    """Store the audit of ``version``. A complete version that fails it becomes ``failed``: kept for
    inspection (``embeddings list``), never published, never written to again; the next run of the
    same model starts a new version. (A staging version stays staging: it can still be resumed; the
    published one stays published.)"""
    with engine.begin() as conn:
        store.save_audit(conn, version, passed, audit)


def require_published(engine: sa.Engine, family: str) -> str:
    """The published version of ``family``; EmbeddingError saying what to run when there is none."""
    with engine.connect() as conn:
        version = published_version(conn, family)
    if version is None:
        raise EmbeddingError(f"no published {family} embeddings: materialize {FAMILIES[family].asset} and "
                             "published_embeddings")
    return version


def load_vectors(conn: sa.Connection, version: str, detection_ids: list[str], *, chunk: int = 5000
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(found, matrix): row i of the float32 matrix is the embedding of ``detection_ids[i]`` in
    ``version`` where ``found[i]`` (zeros elsewhere). Read ``chunk`` ids at a time in pgvector's
    binary form (``store.vectors.read_chunk``), so memory is the matrix itself."""
    matrix = np.zeros((len(detection_ids), t.EMBEDDING_DIM), dtype=np.float32)
    found = np.zeros(len(detection_ids), dtype=bool)
    for start in range(0, len(detection_ids), chunk):
        found[start:start + chunk], matrix[start:start + chunk] = stored_vectors.read_chunk(
            conn, version, detection_ids[start:start + chunk])
    return found, matrix
