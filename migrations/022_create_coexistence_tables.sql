-- Living beside the existing system's worker. Until `deer-reid cutover`, this pipeline's matcher
-- only proposes (reid_match_proposals) and its profiles stay in reid_deer_profiles; the deer table's
-- vectors, detections.deer_id and reid_similarity_scores are the worker's. A fresh install has no
-- worker: it starts cut over ('deer_reid'); `db migrate --adopt` sets 'existing_system'.
CREATE TABLE reid_live_matching (
    id         BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),   -- one row
    owner      TEXT NOT NULL CHECK (owner IN ('existing_system', 'deer_reid')),
    reassign   BOOLEAN NOT NULL DEFAULT FALSE,   -- may change the worker's automatic assignments
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO reid_live_matching (owner) VALUES ('deer_reid');

-- What the matcher would assign, per run, while the existing system owns live matching.
CREATE TABLE reid_match_proposals (
    run_id           TEXT NOT NULL REFERENCES reid_assignment_runs (run_id) ON DELETE CASCADE,
    detection_id     UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    current_deer_id  UUID,
    proposed_deer_id UUID,
    similarity       DOUBLE PRECISION,
    PRIMARY KEY (run_id, detection_id)
);
CREATE INDEX ix_reid_match_proposals_detection ON reid_match_proposals (detection_id);

-- Each cut-over, and what it replaced, so that `cutover --undo` can put it back.
CREATE TABLE reid_cutovers (
    id        BIGSERIAL PRIMARY KEY,
    cut_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    undone_at TIMESTAMPTZ,
    reassign  BOOLEAN NOT NULL
);
CREATE TABLE reid_cutover_kept_deer (
    cutover_id                  BIGINT NOT NULL REFERENCES reid_cutovers (id) ON DELETE CASCADE,
    deer_id                     UUID NOT NULL REFERENCES deer (id) ON DELETE CASCADE,
    feature_vector              VECTOR(512),
    feature_vector_multiscale   VECTOR(512),
    feature_vector_efficientnet VECTOR(512),
    embedding_version           VARCHAR(20),
    PRIMARY KEY (cutover_id, deer_id)
);
CREATE TABLE reid_cutover_kept_assignments (
    cutover_id   BIGINT NOT NULL REFERENCES reid_cutovers (id) ON DELETE CASCADE,
    detection_id UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    deer_id      UUID,
    PRIMARY KEY (cutover_id, detection_id)
);
