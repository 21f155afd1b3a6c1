"""SQLAlchemy Core descriptions of the tables this project reads and writes.

The DDL itself lives in ``migrations/`` (plain SQL, shared with the existing system); these are the
matching column lists so that queries are written once, here and in ``queries.py``. Only the
columns this project touches are listed for the existing system's tables.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID

from deer_reid_assets.core.families import EMBEDDING_DIM

metadata = sa.MetaData()

# --- the existing system's tables (migrations 001-012, 020-021) -----------------------------------
# Its ids are client-side UUIDs and most of its NOT NULL columns have no database default (its
# SQLAlchemy models fill them in): the Python-side defaults below do the same for every insert made
# through these tables.


def new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


locations = sa.Table(
    "locations",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True, default=new_id),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("coordinates", JSON),  # {"lat": .., "lon": ..}
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("image_count", sa.Integer, nullable=False, default=0),
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True, default=new_id),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("path", sa.String(512), nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=_now),
    sa.Column("location_id", UUID(as_uuid=False)),
    sa.Column("exif_data", JSON),
    sa.Column("processing_status", sa.Enum("pending", "processing", "completed", "failed", name="processingstatus",
                                           create_type=False), nullable=False, default="pending"),
    sa.Column("error_message", sa.Text),
)

deer = sa.Table(
    "deer",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True, default=new_id),
    sa.Column("name", sa.String(100)),
    sa.Column("sex", sa.Enum("buck", "doe", "fawn", "unknown", name="deersex", create_type=False), nullable=False,
              default="unknown"),
    sa.Column("status", sa.Enum("alive", "deceased", "unknown", name="deerstatus", create_type=False), nullable=False,
              default="alive"),
    sa.Column("species", sa.String(100), nullable=False, default="white_tailed_deer"),
    sa.Column("notes", sa.String(1000)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=_now),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False, default=_now),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False, default=_now),
    sa.Column("feature_vector", Vector(EMBEDDING_DIM)),
    sa.Column("feature_vector_multiscale", Vector(EMBEDDING_DIM)),
    sa.Column("feature_vector_efficientnet", Vector(EMBEDDING_DIM)),
    sa.Column("feature_vector_finetuned", Vector(EMBEDDING_DIM)),
    sa.Column("embedding_version", sa.String(20)),
    sa.Column("confidence", sa.Float, nullable=False, default=0.0),
    sa.Column("sighting_count", sa.Integer, nullable=False, default=0),
    sa.Column("best_photo_id", UUID(as_uuid=False)),
)

detections = sa.Table(
    "detections",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True, default=new_id),
    sa.Column("image_id", UUID(as_uuid=False), nullable=False),
    sa.Column("deer_id", UUID(as_uuid=False)),
    sa.Column("bbox", JSON, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("classification", sa.String(20), nullable=False, default="unknown"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=_now),
    sa.Column("is_duplicate", sa.Boolean, nullable=False, default=False),
    sa.Column("burst_group_id", UUID(as_uuid=False)),
    sa.Column("is_reviewed", sa.Boolean, nullable=False, default=False),
    sa.Column("is_valid", sa.Boolean, nullable=False, default=True),
    sa.Column("corrected_classification", sa.String(20)),
    sa.Column("correction_notes", sa.Text),
    sa.Column("reviewed_by", sa.String(100)),
    sa.Column("reviewed_at", sa.DateTime(timezone=True)),
)

antler_keypoints = sa.Table(
    "antler_keypoints",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True, default=new_id),
    sa.Column("detection_id", UUID(as_uuid=False), nullable=False),
    sa.Column("keypoint_index", sa.Integer, nullable=False),
    sa.Column("keypoint_name", sa.String(50), nullable=False),
    sa.Column("x", sa.Float, nullable=False),
    sa.Column("y", sa.Float, nullable=False),
    sa.Column("visibility", sa.Integer, nullable=False, default=2),
    sa.Column("confidence", sa.Float, nullable=False, default=0.0),
    sa.Column("created_at", sa.DateTime),
)

SIMILARITY_UNIQUE = "reid_similarity_scores_detection_deer_unique"  # its constraint name
reid_similarity_scores = sa.Table(
    "reid_similarity_scores",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True, default=new_id),
    sa.Column("detection_id", UUID(as_uuid=False), nullable=False),
    sa.Column("deer_id", UUID(as_uuid=False), nullable=False),
    sa.Column("similarity_score", sa.Numeric(5, 4), nullable=False),
    sa.Column("sex_match", sa.Boolean, nullable=False),
    sa.Column("matched", sa.Boolean, nullable=False),
    sa.Column("threshold_used", sa.Numeric(5, 4), nullable=False),
    sa.Column("detection_classification", sa.String(50)),
    sa.Column("deer_sex", sa.String(20)),
    sa.Column("calculated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

# --- this project's tables (migrations/015) ---------------------------------------------------
reid_image_files = sa.Table(
    "reid_image_files",
    metadata,
    sa.Column("image_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("source_path", sa.Text, nullable=False),
    sa.Column("import_batch", sa.Text, nullable=False),
)

reid_ground_truth = sa.Table(
    "reid_ground_truth",
    metadata,
    sa.Column("detection_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("identity", sa.Text, nullable=False),
    sa.Column("sex", sa.String(20)),
    sa.Column("antler_points", sa.Integer),
    sa.Column("attributes", JSONB, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
)

reid_crops = sa.Table(
    "reid_crops",
    metadata,
    sa.Column("detection_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("path", sa.Text),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("clamped", sa.Boolean, nullable=False),
    sa.Column("reject_reason", sa.Text),
    sa.Column("crop_version", sa.Text, nullable=False),
)

reid_embedding_versions = sa.Table(
    "reid_embedding_versions",
    metadata,
    sa.Column("version", sa.String(20), primary_key=True),
    sa.Column("model_family", sa.Text, nullable=False),
    sa.Column("weights_source", sa.Text, nullable=False),
    sa.Column("weights_id", sa.Text, nullable=False),
    sa.Column("weights_description", sa.Text, nullable=False),
    sa.Column("config", JSONB, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("n_embeddings", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    sa.Column("audit_passed", sa.Boolean),
    sa.Column("audit", JSONB),
    sa.Column("audited_at", sa.DateTime(timezone=True)),
)

reid_embeddings = sa.Table(
    "reid_embeddings",
    metadata,
    sa.Column("version", sa.String(20), primary_key=True),
    sa.Column("detection_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("embedding", Vector(EMBEDDING_DIM), nullable=False),
)

reid_published_embeddings = sa.Table(
    "reid_published_embeddings",
    metadata,
    sa.Column("model_family", sa.Text, primary_key=True),
    sa.Column("version", sa.String(20), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

reid_deer_profiles = sa.Table(
    "reid_deer_profiles",
    metadata,
    sa.Column("version", sa.String(20), primary_key=True),
    sa.Column("deer_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("model_family", sa.Text, nullable=False),
    sa.Column("vector", Vector(EMBEDDING_DIM), nullable=False),
    sa.Column("n_detections", sa.Integer, nullable=False),
)

reid_assignment_runs = sa.Table(
    "reid_assignment_runs",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("versions", JSONB, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("config", JSONB, nullable=False),
    sa.Column("n_considered", sa.Integer, nullable=False),
    sa.Column("n_assigned", sa.Integer, nullable=False),
)

reid_assignment_log = sa.Table(
    "reid_assignment_log",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("detection_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("previous_deer_id", UUID(as_uuid=False)),
    sa.Column("best_deer_id", UUID(as_uuid=False)),
    sa.Column("new_deer_id", UUID(as_uuid=False)),
    sa.Column("similarity", sa.Float),
)

reid_eval_splits = sa.Table(
    "reid_eval_splits",
    metadata,
    sa.Column("split_name", sa.Text, primary_key=True),
    sa.Column("detection_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("identity", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
)

reid_evaluations = sa.Table(
    "reid_evaluations",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("versions", JSONB, nullable=False),
    sa.Column("summary", JSONB, nullable=False),
    sa.Column("report", JSONB, nullable=False),
)

reid_profile_sets = sa.Table(
    "reid_profile_sets",
    metadata,
    sa.Column("id", sa.String(20), primary_key=True),
    sa.Column("versions", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

reid_ensemble_weights = sa.Table(
    "reid_ensemble_weights",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("version_a", sa.String(20), nullable=False),
    sa.Column("version_b", sa.String(20), nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float),
    sa.Column("meets_budget", sa.Boolean, nullable=False),
    sa.Column("max_false_match_rate", sa.Float, nullable=False),
    sa.Column("search", JSONB, nullable=False),
)
