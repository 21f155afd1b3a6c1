"""Embedding versions' SQL: their rows in ``reid_embedding_versions``, the published pointer per model
family (``reid_published_embeddings``), the locks that keep writers and publishers apart, and the crops
there are to embed (``core/embed/versions.py`` decides with it; the vectors themselves are in
``store/vectors.py``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from deer_reid_assets.core.store import schema as t

PUBLISH_LOCK = 0x5EED_0B0B  # advisory lock: one publisher at a time
EMBED_LOCK = 0x5EED_0E4B  # advisory lock class: one writer per model family at a time


def usable_crops(conn: sa.Connection, detection_ids: list[str] | None = None) -> list[tuple[str, str]]:
    """(detection id, crop path) of every ok crop of a valid detection, in a stable order."""
    c, d = t.reid_crops, t.detections
    query = (
        sa.select(c.c.detection_id, c.c.path)
        .join(d, d.c.id == c.c.detection_id)
        .where(c.c.status == "ok", d.c.is_valid.isnot(False))
        .order_by(c.c.detection_id)
    )
    if detection_ids is not None:
        query = query.where(c.c.detection_id.in_(detection_ids))
    return [(r[0], r[1]) for r in conn.execute(query)]


def not_failed(conn: sa.Connection, family: str) -> list[sa.Row]:
    """Every version of ``family`` that did not fail its audit, newest first."""
    v = t.reid_embedding_versions
    return conn.execute(
        sa.select(v).where(v.c.model_family == family, v.c.status != "failed").order_by(v.c.created_at.desc())
    ).all()


def lock_family(conn: sa.Connection, family: str) -> None:
    """Wait for, then take, the session-level embedding lock of ``family``."""
    conn.execute(sa.text("SELECT pg_advisory_lock(:c, hashtext(:f))"), {"c": EMBED_LOCK, "f": family})


def try_lock_family(conn: sa.Connection, family: str) -> bool:
    """Whether the session-level embedding lock of ``family`` was free (and is now held)."""
    return conn.execute(sa.text("SELECT pg_try_advisory_lock(:c, hashtext(:f))"),
                        {"c": EMBED_LOCK, "f": family}).scalar()


def unlock_family(conn: sa.Connection, family: str) -> None:
    """Free the embedding lock of ``family`` this session holds."""
    conn.execute(sa.text("SELECT pg_advisory_unlock(:c, hashtext(:f))"), {"c": EMBED_LOCK, "f": family})


def exists(conn: sa.Connection, version: str) -> bool:
    """Whether ``version`` has a row."""
    v = t.reid_embedding_versions
    return conn.execute(sa.select(v.c.version).where(v.c.version == version)).first() is not None


def status(conn: sa.Connection, version: str) -> str | None:
    """The status of ``version`` (staging, complete, published, failed), or None."""
    v = t.reid_embedding_versions
    return conn.execute(sa.select(v.c.status).where(v.c.version == version)).scalar()


def insert_version(conn: sa.Connection, version: str, family: str, weights, config: dict) -> None:
    """A new ``staging`` version of ``family`` with no vectors yet (``weights``: the embedder's weights)."""
    conn.execute(sa.insert(t.reid_embedding_versions).values(
        version=version, model_family=family, weights_source=weights.source,
        weights_id=weights.weights_id, weights_description=weights.description,
        config=config, status="staging", n_embeddings=0,
    ))


def mark_complete(conn: sa.Connection, version: str, total: int) -> None:
    """Record ``version`` as complete with ``total`` vectors (a published version stays published)."""
    v = t.reid_embedding_versions
    conn.execute(
        sa.update(v).where(v.c.version == version)
        .values(n_embeddings=total, completed_at=sa.func.now(),
                status=sa.case((v.c.status == "published", "published"), else_="complete"))
    )


def save_audit(conn: sa.Connection, version: str, passed: bool, audit: dict) -> None:
    """Store the audit of ``version``; a failed one turns a complete version ``failed`` (any other
    status stays as it is)."""
    v = t.reid_embedding_versions
    values = dict(audit_passed=passed, audit=audit, audited_at=sa.func.now())
    if not passed:
        values["status"] = sa.case((v.c.status == "complete", "failed"), else_=v.c.status)
    conn.execute(sa.update(v).where(v.c.version == version).values(**values))


def lock_publishing(conn: sa.Connection) -> None:
    """Take the publishers' lock until the transaction ends: one publisher at a time."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK})


def version_for_update(conn: sa.Connection, version: str) -> sa.Row | None:
    """The row of ``version``, locked until the transaction ends; None when there is none."""
    v = t.reid_embedding_versions
    return conn.execute(sa.select(v).where(v.c.version == version).with_for_update()).first()


def version_row(conn: sa.Connection, version: str) -> sa.Row:
    """The row of ``version`` (NoResultFound when there is none)."""
    v = t.reid_embedding_versions
    return conn.execute(sa.select(v).where(v.c.version == version)).one()


def unpublish(conn: sa.Connection, version: str) -> None:
    """A version that is no longer its family's published one is ``complete`` again."""
    v = t.reid_embedding_versions
    conn.execute(sa.update(v).where(v.c.version == version).values(status="complete"))


def point_published(conn: sa.Connection, family: str, version: str) -> None:
    """Make ``version`` the published one of ``family``: the family's pointer and the version's status."""
    v, p = t.reid_embedding_versions, t.reid_published_embeddings
    conn.execute(
        pg_insert(p).values(model_family=family, version=version)
        .on_conflict_do_update(index_elements=[p.c.model_family],
                               set_={"version": version, "published_at": sa.func.now()})
    )
    conn.execute(sa.update(v).where(v.c.version == version).values(status="published", published_at=sa.func.now()))


def latest_version(conn: sa.Connection, family: str) -> sa.Row | None:
    """The newest complete (or published) version of ``family``: what its asset produced last."""
    v = t.reid_embedding_versions
    return conn.execute(sa.select(v).where(v.c.model_family == family, v.c.status.in_(("complete", "published")))
                        .order_by(v.c.completed_at.desc().nulls_last(), v.c.created_at.desc()).limit(1)).first()


def newest_version(conn: sa.Connection, family: str) -> sa.Row | None:
    """The newest finished version of ``family``, a failed one included (what its last run produced)."""
    v = t.reid_embedding_versions
    return conn.execute(sa.select(v).where(v.c.model_family == family,
                                           v.c.status.in_(("complete", "published", "failed")))
                        .order_by(v.c.completed_at.desc().nulls_last(), v.c.created_at.desc()).limit(1)).first()


def published_version(conn: sa.Connection, family: str) -> str | None:
    """The published version of ``family``, or None."""
    p = t.reid_published_embeddings
    return conn.execute(sa.select(p.c.version).where(p.c.model_family == family)).scalar()


def published_versions(conn: sa.Connection) -> dict[str, str]:
    """{family: published version} for the families that have one."""
    p = t.reid_published_embeddings
    return dict(conn.execute(sa.select(p.c.model_family, p.c.version)).all())


def list_versions(conn: sa.Connection) -> list[dict]:
    """Every version's row as a dict, oldest first."""
    v = t.reid_embedding_versions
    rows = conn.execute(sa.select(v).order_by(v.c.created_at)).mappings().all()
    return [dict(r) for r in rows]
