"""Embedding vectors read a chunk of detection ids at a time, in pgvector's binary form (no text
parsing, no list of every row): what the streamed evaluation and the audit read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa

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


def from_binary(raw: bytes) -> np.ndarray:
    """pgvector's binary vector: uint16 dimensions, uint16 unused, then big-endian float32 values."""
    dim = int.from_bytes(raw[:2], "big")
    if dim != t.EMBEDDING_DIM:
        raise ValueError(f"stored embedding has {dim} dimensions, expected {t.EMBEDDING_DIM}")
    return np.frombuffer(raw, dtype=">f4", count=dim, offset=4)
