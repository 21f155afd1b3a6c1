"""Embedding vectors (``reid_embeddings``): read a chunk of detection ids at a time, in pgvector's
binary form (no text parsing, no list of every row), as the streamed evaluation and the audit read
them; written, and listed, for ``core/embed/versions.py``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from deer_reid_assets.core.store import schema as t

_VECTORS_OF = sa.text(
    "SELECT detection_id::text, vector_send(embedding) FROM reid_embeddings "
    "WHERE version = :version AND detection_id = ANY(CAST(:ids AS uuid[]))"
)
_EMBEDDED = sa.text(
    "SELECT detection_id::text FROM reid_embeddings "
    "WHERE version = :version AND detection_id = ANY(CAST(:ids AS uuid[]))"
)


def read_chunk(conn: sa.Connection, version: str, detection_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(found, matrix) for one chunk of ids: row i of the float32 matrix is the embedding of
    ``detection_ids[i]`` in ``version`` where ``found[i]`` (zeros elsewhere)."""
    position = {d: i for i, d in enumerate(detection_ids)}
    matrix = np.zeros((len(detection_ids), t.EMBEDDING_DIM), dtype=np.float32)
    found = np.zeros(len(detection_ids), dtype=bool)
    if detection_ids:
        for det, raw in conn.execute(_VECTORS_OF, {"version": version, "ids": list(detection_ids)}):
            i = position[det]
            matrix[i] = from_binary(raw)
            found[i] = True
    return found, matrix


def embedded(conn: sa.Connection, version: str, detection_ids: Sequence[str], *, chunk: int = 5000) -> np.ndarray:
    """Which of ``detection_ids`` have a vector in ``version`` (a boolean per id; no vector is read)."""
    position = {d: i for i, d in enumerate(detection_ids)}
    found = np.zeros(len(detection_ids), dtype=bool)
    for start in range(0, len(detection_ids), chunk):
        ids = list(detection_ids[start:start + chunk])
        for (det,) in conn.execute(_EMBEDDED, {"version": version, "ids": ids}):
            found[position[det]] = True
    return found


def embedded_ids(conn: sa.Connection, version: str) -> set[str]:
    """The detection ids that have a vector in ``version``."""
    e = t.reid_embeddings
    return set(conn.execute(sa.select(e.c.detection_id).where(e.c.version == version)).scalars())


def insert(conn: sa.Connection, version: str, detection_ids: list[str], vectors: np.ndarray) -> None:
    """Add ``vectors`` (row i for ``detection_ids[i]``) to ``version``; a vector already there is kept."""
    conn.execute(pg_insert(t.reid_embeddings).on_conflict_do_nothing(),
                 [{"version": version, "detection_id": d, "embedding": v} for d, v in zip(detection_ids, vectors)])


def read_all(conn: sa.Connection, version: str) -> tuple[list[str], np.ndarray]:
    """(detection ids, (n, 512) float32 matrix) of ``version``, ordered by detection id."""
    e = t.reid_embeddings
    rows = conn.execute(sa.select(e.c.detection_id, e.c.embedding).where(e.c.version == version)
                        .order_by(e.c.detection_id)).all()
    if not rows:
        return [], np.zeros((0, t.EMBEDDING_DIM), dtype=np.float32)
    return [r[0] for r in rows], np.stack([np.asarray(r[1], dtype=np.float32) for r in rows])


def from_binary(raw: bytes) -> np.ndarray:
    """pgvector's binary vector: uint16 dimensions, uint16 unused, then big-endian float32 values."""
    dim = int.from_bytes(raw[:2], "big")
    if dim != t.EMBEDDING_DIM:
        raise ValueError(f"stored embedding has {dim} dimensions, expected {t.EMBEDDING_DIM}")
    return np.frombuffer(raw, dtype=">f4", count=dim, offset=4)
