-- Existing system, level 011: every similarity its matcher computed. Scores are in [0, 1] (its CHECK);
-- it compares a detection only with profiles of a compatible sex.
CREATE TABLE reid_similarity_scores (
    id                       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    detection_id             UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    deer_id                  UUID NOT NULL REFERENCES deer (id) ON DELETE CASCADE,
    similarity_score         NUMERIC(5, 4) NOT NULL CHECK (similarity_score >= 0.0 AND similarity_score <= 1.0),
    sex_match                BOOLEAN NOT NULL,
    matched                  BOOLEAN NOT NULL,
    threshold_used           NUMERIC(5, 4) NOT NULL,
    detection_classification VARCHAR(50),
    deer_sex                 VARCHAR(20),
    calculated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT reid_similarity_scores_detection_deer_unique UNIQUE (detection_id, deer_id)
);
CREATE INDEX idx_reid_similarity_detection ON reid_similarity_scores (detection_id, similarity_score DESC);
CREATE INDEX idx_reid_similarity_deer ON reid_similarity_scores (deer_id, similarity_score DESC);
CREATE INDEX idx_reid_similarity_timestamp ON reid_similarity_scores (calculated_at DESC);
CREATE INDEX idx_reid_similarity_score ON reid_similarity_scores (similarity_score DESC);
CREATE INDEX idx_reid_similarity_matched ON reid_similarity_scores (matched, similarity_score DESC);
CREATE INDEX idx_reid_similarity_sex_match ON reid_similarity_scores (sex_match, matched);
CREATE INDEX idx_reid_similarity_analysis ON reid_similarity_scores (calculated_at DESC, matched, sex_match);
