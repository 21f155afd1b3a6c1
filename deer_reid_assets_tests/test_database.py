"""The schema, the migration runner and the database connection, against real PostgreSQL + pgvector."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import sqlalchemy as sa

from deer_reid_assets.core.store import db, migrations, schema


def _columns(engine, table):
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"), {"t": table})
        return dict(rows.all())


def test_migrations_apply_from_nothing_then_are_a_no_op(empty_db_url):
    engine = db.make_engine(empty_db_url)
    applied = migrations.migrate(engine)
    names = [m.name for m in migrations.discover()]
    assert applied == names
    assert names[11:14] == ["012_add_reid_enhancement", "013_add_finetuned_embeddings", "014_add_antler_features"]
    assert names[19:21] == ["020_antler_keypoints", "021_antler_processing_log"]
    assert migrations.migrate(engine) == []
    assert {state for _, state in migrations.status(engine)} == {"applied"}


def test_seed_columns_have_the_seed_types(engine):
    cols = _columns(engine, "deer")
    assert cols["feature_vector"] == "vector(512)"
    assert cols["feature_vector_multiscale"] == "vector(512)"
    assert cols["feature_vector_efficientnet"] == "vector(512)"
    assert cols["feature_vector_finetuned"] == "vector(512)"
    assert cols["embedding_version"] == "character varying(20)"
    assert cols["antler_points"] == "integer"
    assert cols["antler_description"] == "text"
    assert cols["physical_features"] == "jsonb"
    with engine.connect() as conn:
        default = conn.execute(sa.text(
            "SELECT column_default FROM information_schema.columns WHERE table_name='deer' AND column_name='embedding_version'"
        )).scalar()
        indexes = dict(conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'deer'")).all())
    assert default.startswith("'v1_resnet50'")  # the existing system's 012
    for name in ("ix_deer_feature_vector_hnsw", "ix_deer_feature_vector_multiscale_hnsw",
                 "ix_deer_feature_vector_efficientnet_hnsw", "idx_deer_feature_vector_finetuned"):
        assert "hnsw" in indexes[name] and "vector_cosine_ops" in indexes[name]
    assert "m='16'" in indexes["ix_deer_feature_vector_multiscale_hnsw"]


def test_existing_system_tables_match_the_described_schema(engine):
    images = _columns(engine, "images")
    assert images["path"] == "character varying(512)" and images["processing_status"] == "processingstatus"
    detections = _columns(engine, "detections")
    assert {"bbox", "confidence", "classification", "is_duplicate", "burst_group_id", "is_reviewed", "is_valid",
            "corrected_classification", "correction_notes", "reviewed_by", "reviewed_at"} <= set(detections)
    scores = _columns(engine, "reid_similarity_scores")
    assert scores["similarity_score"] == "numeric(5,4)"
    deer = _columns(engine, "deer")
    assert deer["species"] == "character varying(100)" and deer["notes"] == "character varying(1000)"
    assert deer["best_photo_id"] == "uuid" and _columns(engine, "locations")["coordinates"] == "json"
    with engine.connect() as conn:
        not_null = dict(conn.execute(sa.text(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'deer'")).all())
        constraints = set(conn.execute(sa.text("SELECT conname FROM pg_constraint")).scalars())
        id_default = conn.execute(sa.text("SELECT column_default FROM information_schema.columns "
                                          "WHERE table_name = 'deer' AND column_name = 'id'")).scalar()
    assert not_null["first_seen"] == not_null["last_seen"] == not_null["confidence"] == "NO"
    assert id_default is None  # client-side UUIDs, as in the existing system
    assert {"reid_similarity_scores_detection_deer_unique", "fk_deer_best_photo", "valid_keypoint_index",
            "unique_detection_keypoint", "valid_keypoints_count"} <= constraints


def test_vector_round_trip_and_cosine_query(engine):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with engine.begin() as conn:
        ids = [conn.execute(sa.insert(schema.deer).values(name=f"D{i}", sex="buck", feature_vector=v)
                            .returning(schema.deer.c.id)).scalar_one() for i, v in enumerate(vectors)]
        back = conn.execute(sa.select(schema.deer.c.feature_vector).where(schema.deer.c.id == ids[1])).scalar_one()
        query = vectors[2] + 0.05 * vectors[0]
        nearest = conn.execute(
            sa.select(schema.deer.c.id, schema.deer.c.feature_vector.cosine_distance(query).label("d"))
            .order_by("d").limit(1)
        ).first()
    np.testing.assert_allclose(np.asarray(back), vectors[1], rtol=1e-6)
    assert nearest.id == ids[2]
    expected = 1 - float(query @ vectors[2] / np.linalg.norm(query))
    assert nearest.d == pytest.approx(expected, abs=1e-5)


def test_baseline_adopts_an_existing_database(empty_db_url, tmp_path):
    """A database built by the existing system's files 001-011 alone is adopted with --baseline 011."""
    engine = db.make_engine(empty_db_url)
    files = migrations.discover()
    with engine.begin() as conn:
        for m in files[:11]:
            conn.exec_driver_sql(m.sql)
    applied = migrations.migrate(engine, baseline="011")
    assert applied == [m.name for m in files[11:]]
    states = dict(migrations.status(engine))
    assert states["011_add_reid_similarity_scores"] == "baseline"
    assert states["012_add_reid_enhancement"] == "applied"


def test_baseline_refuses_a_database_without_the_existing_tables(empty_db_url):
    engine = db.make_engine(empty_db_url)
    with pytest.raises(migrations.MigrationError, match="lacks what those migrations create.*table locations"):
        migrations.migrate(engine, baseline="011")


def test_tampered_migration_is_refused(engine, tmp_path):
    copy = tmp_path / "migrations"
    shutil.copytree(migrations.default_migrations_dir(), copy)
    target = copy / "013_add_finetuned_embeddings.sql"
    target.write_text(target.read_text() + "\n-- edited after it was applied\n")
    with pytest.raises(migrations.MigrationError, match=r"013_add_finetuned_embeddings\) was changed after it was applied"):
        migrations.migrate(engine, directory=copy)
    (copy / "013_add_finetuned_embeddings.sql").unlink()
    with pytest.raises(migrations.MigrationError, match="without gaps"):
        migrations.migrate(engine, directory=copy)


def test_a_failing_migration_is_rolled_back_whole(engine, tmp_path):
    copy = tmp_path / "migrations"
    shutil.copytree(migrations.default_migrations_dir(), copy)
    n = len(list(copy.glob("*.sql"))) + 1
    (copy / f"{n:03d}_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT no_such_function();\n")
    with pytest.raises(migrations.MigrationError, match="broken failed and was rolled back"):
        migrations.migrate(engine, directory=copy)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('half_done')")).scalar() is None


def test_wrong_database_url_is_a_clear_error():
    with pytest.raises(db.DatabaseError, match=r"cannot connect to the database at postgresql\+psycopg2://nobody:\*\*\*@127.0.0.1:1/x"):
        db.make_engine("postgresql://nobody:secret@127.0.0.1:1/x")
    with pytest.raises(db.DatabaseError, match="must be a PostgreSQL URL"):
        db.normalize_url("mysql://u@h/db")


def test_database_without_pgvector_is_refused(pg_server, monkeypatch):
    """A server where the `vector` extension is not available gets a one-line refusal. The embedded
    server has pgvector, so this asks make_engine about an extension that is hidden from it."""
    engine = db.make_engine(db.with_database(pg_server, "postgres"))
    engine.dispose()
    monkeypatch.setattr(db, "_VECTOR_CHECK", "SELECT 1 FROM pg_available_extensions WHERE name = 'no_such_vector_ext'")
    with pytest.raises(db.DatabaseError, match="no pgvector extension available"):
        db.make_engine(db.with_database(pg_server, "postgres"))
