-- Existing system, migration 011: similarity of each detection to candidate profiles.
-- The existing matcher compares a detection only with profiles of the same sex.
CREATE TABLE reid_similarity_scores (
    id                       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    detection_id             UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    deer_id                  UUID NOT NULL REFERENCES deer (id) ON DELETE CASCADE,
    similarity_score         NUMERIC(5, 4) NOT NULL,
    sex_match                BOOLEAN NOT NULL,
    matched                  BOOLEAN NOT NULL,
    threshold_used           NUMERIC(5, 4) NOT NULL,
    detection_classification VARCHAR(20),
    deer_sex                 VARCHAR(20),
    calculated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT uq_reid_similarity_detection_deer UNIQUE (detection_id, deer_id)
);
CREATE INDEX ix_reid_similarity_scores_deer_id ON reid_similarity_scores (deer_id);
