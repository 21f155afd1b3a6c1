"""The user's existing system (thumper_counter) as a test fixture: its database built from empty the
way that system builds it, and filled with its kind of rows.

The DDL below is written independently of ``migrations/`` on purpose (a different route to the same
schema: whole tables as its SQLAlchemy models create them, its hand-run migration files applied on
top, an index under the name SQLAlchemy gives it, the extra score columns its worker writes), so
that adoption is tested against a database it did not build. Rows are what its API and Celery
worker leave behind: photos processed by its detector (``processing_status``), detections in its
class vocabulary including the older buck age classes, duplicates and burst groups, deer profiles
carrying its worker's own vectors, automatic assignments with their similarity scores, reviewed and
manual assignments, antler keypoints.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset

THEIR_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TYPE deersex AS ENUM ('buck', 'doe', 'fawn', 'unknown');
CREATE TYPE deerstatus AS ENUM ('alive', 'deceased', 'unknown');
CREATE TYPE processingstatus AS ENUM ('pending', 'processing', 'completed', 'failed');

CREATE TABLE locations (id UUID NOT NULL PRIMARY KEY, name VARCHAR(100) NOT NULL, description TEXT,
    coordinates JSON, active BOOLEAN NOT NULL, image_count INTEGER NOT NULL);
COMMENT ON TABLE locations IS 'camera sites';
CREATE UNIQUE INDEX ix_locations_name ON locations (name);
CREATE INDEX ix_locations_active ON locations (active);
CREATE INDEX ix_locations_active_name ON locations (active, name);

CREATE TABLE images (id UUID NOT NULL PRIMARY KEY, filename VARCHAR(255) NOT NULL, path VARCHAR(512) NOT NULL UNIQUE,
    "timestamp" TIMESTAMP WITH TIME ZONE NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    location_id UUID REFERENCES locations (id) ON DELETE SET NULL, exif_data JSON,
    processing_status processingstatus NOT NULL DEFAULT 'pending'::processingstatus, error_message TEXT);
CREATE INDEX ix_images_timestamp ON images ("timestamp");
CREATE INDEX ix_images_location_id ON images (location_id);
CREATE INDEX ix_images_processing_status ON images (processing_status);   -- SQLAlchemy's name for it
CREATE INDEX ix_images_location_timestamp ON images (location_id, "timestamp");
CREATE INDEX idx_images_timestamp ON images ("timestamp");

CREATE TABLE deer (id UUID NOT NULL PRIMARY KEY, name VARCHAR(100), sex deersex NOT NULL,
    first_seen TIMESTAMP WITH TIME ZONE NOT NULL, last_seen TIMESTAMP WITH TIME ZONE NOT NULL,
    feature_vector vector(512), confidence FLOAT NOT NULL, sighting_count INTEGER NOT NULL,
    status deerstatus NOT NULL DEFAULT 'alive', species VARCHAR(100) NOT NULL DEFAULT 'white_tailed_deer',
    notes VARCHAR(1000), created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), updated_at TIMESTAMP WITH TIME ZONE,
    best_photo_id UUID, feature_vector_multiscale vector(512), feature_vector_efficientnet vector(512),
    embedding_version VARCHAR(20) DEFAULT 'v1_resnet50');
ALTER TABLE deer ADD CONSTRAINT fk_deer_best_photo FOREIGN KEY (best_photo_id) REFERENCES images (id) ON DELETE SET NULL;
CREATE INDEX ix_deer_sex ON deer (sex);
CREATE INDEX ix_deer_status ON deer (status);
CREATE INDEX ix_deer_first_seen ON deer (first_seen);
CREATE INDEX ix_deer_last_seen ON deer (last_seen);
CREATE INDEX ix_deer_last_seen_sex ON deer (last_seen, sex);
CREATE INDEX ix_deer_sighting_count ON deer (sighting_count);
CREATE INDEX ix_deer_best_photo_id ON deer (best_photo_id);
CREATE INDEX ix_deer_feature_vector_hnsw ON deer USING hnsw (feature_vector vector_cosine_ops);
CREATE INDEX ix_deer_feature_vector_multiscale_hnsw ON deer USING hnsw (feature_vector_multiscale vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);
CREATE INDEX ix_deer_feature_vector_efficientnet_hnsw ON deer USING hnsw (feature_vector_efficientnet vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);
CREATE INDEX ix_deer_embedding_version ON deer (embedding_version);

CREATE TABLE detections (id UUID NOT NULL PRIMARY KEY,
    image_id UUID NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    deer_id UUID REFERENCES deer (id) ON DELETE SET NULL,
    bbox JSON NOT NULL, confidence FLOAT NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    classification VARCHAR(20) NOT NULL DEFAULT 'unknown',
    is_duplicate BOOLEAN NOT NULL DEFAULT false, burst_group_id UUID,
    is_reviewed BOOLEAN NOT NULL DEFAULT false, is_valid BOOLEAN NOT NULL DEFAULT true,
    corrected_classification VARCHAR(20), correction_notes TEXT, reviewed_by VARCHAR(100),
    reviewed_at TIMESTAMP WITH TIME ZONE);
CREATE INDEX ix_detections_image_id ON detections (image_id);
CREATE INDEX ix_detections_deer_id ON detections (deer_id);
CREATE INDEX ix_detections_image_deer ON detections (image_id, deer_id);
CREATE INDEX ix_detections_confidence ON detections (confidence);
CREATE INDEX ix_detections_classification ON detections (classification);
CREATE INDEX idx_detections_is_duplicate ON detections (is_duplicate);
CREATE INDEX idx_detections_burst_group ON detections (burst_group_id);
CREATE INDEX ix_detections_is_reviewed ON detections (is_reviewed);
CREATE INDEX ix_detections_is_valid ON detections (is_valid);
CREATE INDEX idx_detections_classification_confidence ON detections (classification, confidence DESC);

CREATE TABLE IF NOT EXISTS reid_similarity_scores (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    detection_id UUID NOT NULL REFERENCES detections(id) ON DELETE CASCADE,
    deer_id UUID NOT NULL REFERENCES deer(id) ON DELETE CASCADE,
    similarity_score NUMERIC(5, 4) NOT NULL CHECK (similarity_score >= 0.0 AND similarity_score <= 1.0),
    sex_match BOOLEAN NOT NULL, matched BOOLEAN NOT NULL, threshold_used NUMERIC(5, 4) NOT NULL,
    detection_classification VARCHAR(50), deer_sex VARCHAR(20),
    calculated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT reid_similarity_scores_detection_deer_unique UNIQUE (detection_id, deer_id));
CREATE INDEX idx_reid_similarity_detection ON reid_similarity_scores(detection_id, similarity_score DESC);
CREATE INDEX idx_reid_similarity_deer ON reid_similarity_scores(deer_id, similarity_score DESC);
CREATE INDEX idx_reid_similarity_timestamp ON reid_similarity_scores(calculated_at DESC);
CREATE INDEX idx_reid_similarity_score ON reid_similarity_scores(similarity_score DESC);
CREATE INDEX idx_reid_similarity_matched ON reid_similarity_scores(matched, similarity_score DESC);
CREATE INDEX idx_reid_similarity_sex_match ON reid_similarity_scores(sex_match, matched);
CREATE INDEX idx_reid_similarity_analysis ON reid_similarity_scores(calculated_at DESC, matched, sex_match);
-- written by its worker, created by hand (no migration in its repository has them)
ALTER TABLE reid_similarity_scores ADD COLUMN similarity_multiscale NUMERIC(5, 4),
    ADD COLUMN similarity_efficientnet NUMERIC(5, 4), ADD COLUMN similarity_ensemble NUMERIC(5, 4);

CREATE TABLE IF NOT EXISTS antler_keypoints (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    detection_id UUID NOT NULL REFERENCES detections(id) ON DELETE CASCADE,
    keypoint_index INTEGER NOT NULL, keypoint_name VARCHAR(50) NOT NULL, x FLOAT NOT NULL, y FLOAT NOT NULL,
    visibility INTEGER NOT NULL DEFAULT 2, confidence FLOAT NOT NULL DEFAULT 0.0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT valid_keypoint_index CHECK (keypoint_index >= 0 AND keypoint_index <= 15),
    CONSTRAINT valid_visibility CHECK (visibility >= 0 AND visibility <= 2),
    CONSTRAINT valid_confidence CHECK (confidence >= 0.0 AND confidence <= 1.0),
    CONSTRAINT unique_detection_keypoint UNIQUE (detection_id, keypoint_index));
CREATE INDEX idx_antler_keypoints_detection_id ON antler_keypoints(detection_id);
CREATE INDEX idx_antler_keypoints_name ON antler_keypoints(keypoint_name);

CREATE TABLE IF NOT EXISTS antler_processing_log (
    detection_id UUID PRIMARY KEY REFERENCES detections(id) ON DELETE CASCADE,
    processed_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    antlers_detected BOOLEAN NOT NULL, keypoints_count INTEGER NOT NULL DEFAULT 0,
    model_version VARCHAR(100) NOT NULL, processing_notes TEXT,
    CONSTRAINT valid_keypoints_count CHECK (keypoints_count >= 0));
CREATE INDEX IF NOT EXISTS idx_antler_processing_detected ON antler_processing_log(antlers_detected);
CREATE INDEX IF NOT EXISTS idx_antler_processing_timestamp ON antler_processing_log(processed_at);
CREATE INDEX IF NOT EXISTS idx_antler_processing_model ON antler_processing_log(model_version);
"""

KEYPOINT_NAMES = [f"{side}_{part}" for side in ("left", "right")
                  for part in ("main_beam", "brow_tine", "g2", "g3", "g4", "tip", "bez_tine", "royal_tine")]


def build_schema(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(THEIR_SCHEMA)


def _unit(rng: np.random.Generator) -> list[float]:
    v = rng.normal(size=512)
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def populate(engine: sa.Engine, photos: Path, *, seed: int = 5, n_images: int = 36) -> dict:
    """Synthetic photos under ``photos``, recorded as that system records them; returns counts."""
    generate_dataset(photos, SyntheticConfig(n_images=n_images, n_bucks=4, n_does=3, seed=seed))
    sidecar = json.loads((photos / "detections.json").read_text())
    truth = json.loads((photos / "ground_truth.json").read_text())["detections"]
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    counts = {"images": 0, "detections": 0, "auto": 0, "reviewed": 0, "manual": 0, "duplicates": 0,
              "bursts": 0, "age_classes": 0, "keypoints": 0}
    with engine.begin() as conn:
        x = lambda sql, **p: conn.execute(sa.text(sql), p)  # noqa: E731
        cams = {}
        for cam in sidecar["cameras"]:
            cams[cam["name"]] = str(uuid.uuid4())
            x("INSERT INTO locations (id, name, description, coordinates, active, image_count) "
              "VALUES (:i, :n, :d, CAST(:c AS json), true, 0)", i=cams[cam["name"]], n=cam["name"],
              d=cam["description"], c=json.dumps({"lat": cam["latitude"], "lon": cam["longitude"]}))
        deer_ids: dict[str, str] = {}
        processed_from = datetime.now(UTC) - timedelta(days=1)  # its worker's clock, in upload order
        last_shot: dict[str, tuple[datetime, str]] = {}
        for n, entry in enumerate(sorted(sidecar["images"], key=lambda e: e["timestamp"])):
            image_id, taken = str(uuid.uuid4()), datetime.fromisoformat(entry["timestamp"])
            processed = processed_from + timedelta(seconds=30 * n)
            status = "completed" if entry["detections"] or n % 2 else "failed"
            x("INSERT INTO images (id, filename, path, timestamp, created_at, location_id, processing_status, "
              "error_message) VALUES (:i, :f, :p, :t, :c, :l, :s, :e)", i=image_id, f=Path(entry["file"]).name,
              p=str((photos / entry["file"]).resolve()), t=taken, c=processed,
              l=cams[entry["camera"]], s=status, e=None if status == "completed" else "CUDA out of memory")
            x("UPDATE locations SET image_count = image_count + 1 WHERE id = :l", l=cams[entry["camera"]])
            counts["images"] += 1
            prev = last_shot.get(entry["camera"])
            burst = prev[1] if prev and (taken - prev[0]).total_seconds() <= 5 else str(uuid.uuid4())
            counts["bursts"] += burst != (prev[1] if prev else None)
            last_shot[entry["camera"]] = (taken, burst)
            for k, det in enumerate(entry["detections"]):
                name = truth[det["key"]]["deer"]
                sex = truth[det["key"]]["sex"]
                cls = det["classification"]
                if cls == "buck" and n % 3 == 0:  # older rows: its earlier detector's buck age classes
                    cls = pick.choice(["mature", "mid", "young"])
                    counts["age_classes"] += 1
                if name not in deer_ids:
                    deer_ids[name] = str(uuid.uuid4())
                    x("INSERT INTO deer (id, name, sex, first_seen, last_seen, feature_vector, "
                      "feature_vector_multiscale, feature_vector_efficientnet, embedding_version, confidence, "
                      "sighting_count, created_at) VALUES (:i, NULL, :s, :t, :t, :v, :m, :e, 'v3_ensemble', :c, 1, :t)",
                      i=deer_ids[name], s=sex if sex in ("buck", "doe") else "unknown", t=taken,
                      v=str(_unit(rng)), m=str(_unit(rng)), e=str(_unit(rng)), c=det["confidence"])
                det_id = str(uuid.uuid4())
                labelled = "label" in det
                manual = labelled and k == 0 and n % 5 == 0
                auto = not labelled and n % 4 != 3
                x("INSERT INTO detections (id, image_id, deer_id, bbox, confidence, created_at, classification, "
                  "burst_group_id, is_reviewed, corrected_classification, reviewed_by, reviewed_at) VALUES "
                  "(:i, :im, :d, CAST(:b AS json), :c, :t, :cls, :bg, :rv, :cc, :by, :at)",
                  i=det_id, im=image_id, d=deer_ids[name] if (labelled or auto) else None,
                  b=json.dumps({k2: int(v) for k2, v in det["bbox"].items()}), c=det["confidence"],
                  t=processed, cls=cls, bg=burst if (labelled or auto) else None, rv=labelled,
                  cc=sex if manual else None, by=("manual" if manual else "reviewer") if labelled else None,
                  at=taken + timedelta(days=1) if labelled else None)
                counts["detections"] += 1
                counts["reviewed"] += labelled and not manual
                counts["manual"] += manual
                if auto:
                    counts["auto"] += 1
                    x("INSERT INTO reid_similarity_scores (detection_id, deer_id, similarity_score, sex_match, matched, "
                      "threshold_used, detection_classification, deer_sex, similarity_ensemble) VALUES "
                      "(:d, :r, :s, true, true, 0.40, :c, :x, :s)", d=det_id, r=deer_ids[name],
                      s=round(0.4 + 0.5 * rng.random(), 4), c=cls, x=sex)
                if k == 0 and n % 6 == 1:  # its within-photo de-duplication: an overlapping lower-confidence box
                    b = det["bbox"]
                    x("INSERT INTO detections (id, image_id, bbox, confidence, created_at, classification, is_duplicate) "
                      "VALUES (:i, :im, CAST(:b AS json), :c, :t, :cls, true)", i=str(uuid.uuid4()), im=image_id,
                      b=json.dumps({"x": int(b["x"]) + 4, "y": int(b["y"]) + 3, "width": int(b["width"]) - 6,
                                    "height": int(b["height"]) - 4}), c=det["confidence"] * 0.6,
                      t=processed, cls=cls)
                    counts["duplicates"] += 1
                if sex == "buck" and counts["keypoints"] < 32:
                    for idx, kp in enumerate(KEYPOINT_NAMES):
                        x("INSERT INTO antler_keypoints (detection_id, keypoint_index, keypoint_name, x, y, visibility, "
                          "confidence) VALUES (:d, :i, :n, :x, :y, :v, 1.0)", d=det_id, i=idx, n=kp,
                          x=float(det["bbox"]["x"]) + idx, y=float(det["bbox"]["y"]), v=2 if idx % 4 else 1)
                        counts["keypoints"] += 1
                    x("INSERT INTO antler_processing_log (detection_id, antlers_detected, keypoints_count, model_version) "
                      "VALUES (:d, true, 16, 'antler_detection_20251116')", d=det_id)
        x("""UPDATE deer SET sighting_count = s.n, first_seen = s.f, last_seen = s.l FROM (
               SELECT d.deer_id, count(*) AS n, min(i.timestamp) AS f, max(i.timestamp) AS l FROM detections d
               JOIN images i ON i.id = d.image_id WHERE d.deer_id IS NOT NULL GROUP BY d.deer_id) s
             WHERE deer.id = s.deer_id""")
        x("UPDATE deer SET name = 'Tall Eight' WHERE id = (SELECT id FROM deer WHERE sex = 'buck' ORDER BY id LIMIT 1)")
    return counts


def fingerprint(engine: sa.Engine) -> dict[str, str]:
    """Checksums of what that system owns and its worker reads: profile vectors, assignments, scores."""
    queries = {
        "deer_vectors": "SELECT md5(string_agg(id::text || coalesce(feature_vector::text, '') || "
                        "coalesce(feature_vector_multiscale::text, '') || coalesce(feature_vector_efficientnet::text, '') "
                        "|| coalesce(embedding_version, ''), ',' ORDER BY id)) FROM deer",
        "assignments": "SELECT md5(string_agg(id::text || coalesce(deer_id::text, '-') || is_reviewed::text, ',' "
                       "ORDER BY id)) FROM detections",
        "scores": "SELECT md5(string_agg(detection_id::text || deer_id::text || similarity_score::text || matched::text, "
                  "',' ORDER BY detection_id, deer_id)) FROM reid_similarity_scores",
        "keypoints": "SELECT md5(string_agg(detection_id::text || keypoint_index || x || y, ',' ORDER BY detection_id, "
                     "keypoint_index)) FROM antler_keypoints",
    }
    with engine.connect() as conn:
        return {k: conn.execute(sa.text(q)).scalar() for k, q in queries.items()}
