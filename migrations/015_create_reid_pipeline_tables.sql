-- deer-reid pipeline tables. The existing system's tables are left as they are (beyond the seed's
-- 012-014); everything this pipeline needs of its own lives in reid_* tables.

-- Content hash of every imported photo, so re-importing the same file does nothing.
CREATE TABLE reid_image_files (
    image_id     UUID PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    sha256       CHAR(64) NOT NULL UNIQUE,
    width        INTEGER,
    height       INTEGER,
    source_path  TEXT NOT NULL,
    import_batch TEXT NOT NULL,
    imported_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_reid_image_files_import_batch ON reid_image_files (import_batch);

-- Hidden truth for evaluation (synthetic data, or a labelled set imported from folders).
CREATE TABLE reid_ground_truth (
    detection_id  UUID PRIMARY KEY REFERENCES detections (id) ON DELETE CASCADE,
    identity      TEXT NOT NULL,
    sex           VARCHAR(20),
    antler_points INTEGER,
    attributes    JSONB NOT NULL DEFAULT '{}'::jsonb,
    source        TEXT NOT NULL
);
CREATE INDEX ix_reid_ground_truth_identity ON reid_ground_truth (identity);

-- One crop per detection; rejected boxes keep their reason instead of failing the batch.
CREATE TABLE reid_crops (
    detection_id  UUID PRIMARY KEY REFERENCES detections (id) ON DELETE CASCADE,
    status        TEXT NOT NULL CHECK (status IN ('ok', 'rejected')),
    path          TEXT,
    width         INTEGER,
    height        INTEGER,
    clamped       BOOLEAN NOT NULL DEFAULT FALSE,
    reject_reason TEXT,
    crop_version  TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((status = 'ok' AND path IS NOT NULL) OR (status = 'rejected' AND reject_reason IS NOT NULL))
);

-- Every embedding set says which model, which weights and which code produced it. Versions are
-- written as 'staging', completed, then published; nothing is overwritten in place.
CREATE TABLE reid_embedding_versions (
    version             VARCHAR(20) PRIMARY KEY,   -- fits deer.embedding_version
    model_family        TEXT NOT NULL,
    weights_source      TEXT NOT NULL,
    weights_id          TEXT NOT NULL,
    weights_description TEXT NOT NULL,
    config              JSONB NOT NULL DEFAULT '{}'::jsonb,
    status              TEXT NOT NULL DEFAULT 'staging'
                        CHECK (status IN ('staging', 'complete', 'published', 'retired', 'failed')),
    n_embeddings        INTEGER NOT NULL DEFAULT 0,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at        TIMESTAMPTZ,
    published_at        TIMESTAMPTZ
);

CREATE TABLE reid_embeddings (
    version      VARCHAR(20) NOT NULL REFERENCES reid_embedding_versions (version) ON DELETE CASCADE,
    detection_id UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    embedding    VECTOR(512) NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (version, detection_id)
);
CREATE INDEX ix_reid_embeddings_detection_id ON reid_embeddings (detection_id);

-- The published version of each model family: a pointer, moved in one transaction.
CREATE TABLE reid_published_embeddings (
    model_family TEXT PRIMARY KEY,
    version      VARCHAR(20) NOT NULL REFERENCES reid_embedding_versions (version),
    published_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Profile (prototype) vectors per deer and embedding version; the published version's vectors are
-- mirrored onto deer.feature_vector* for the existing system. 'legacy' keeps the vectors that were
-- on the deer table before this pipeline first wrote there.
CREATE TABLE reid_deer_profiles (
    version      VARCHAR(20) NOT NULL,
    deer_id      UUID NOT NULL REFERENCES deer (id) ON DELETE CASCADE,
    model_family TEXT NOT NULL,
    vector       VECTOR(512) NOT NULL,
    n_detections INTEGER NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (version, deer_id)
);

-- Each matching run, and what it changed, so any run can be audited and rolled back.
CREATE TABLE reid_assignment_runs (
    run_id        TEXT PRIMARY KEY,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    method        TEXT NOT NULL,
    versions      JSONB NOT NULL,
    threshold     DOUBLE PRECISION NOT NULL,
    config        JSONB NOT NULL DEFAULT '{}'::jsonb,
    n_considered  INTEGER NOT NULL,
    n_assigned    INTEGER NOT NULL
);
CREATE TABLE reid_assignment_log (
    run_id           TEXT NOT NULL REFERENCES reid_assignment_runs (run_id) ON DELETE CASCADE,
    detection_id     UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    previous_deer_id UUID,
    best_deer_id     UUID,
    new_deer_id      UUID,
    similarity       DOUBLE PRECISION,
    PRIMARY KEY (run_id, detection_id)
);

-- Seeded, stored evaluation splits, so two runs compare like with like.
CREATE TABLE reid_eval_splits (
    split_name   TEXT NOT NULL,
    detection_id UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    identity     TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('gallery', 'val_query', 'test_query')),
    PRIMARY KEY (split_name, detection_id)
);

CREATE TABLE reid_evaluations (
    id         BIGSERIAL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    name       TEXT NOT NULL,
    versions   JSONB NOT NULL,
    summary    JSONB NOT NULL,
    report     JSONB NOT NULL
);
