-- Which embedding versions produced the profile vectors on a deer row: deer.embedding_version
-- (VARCHAR(20)) holds the id of a profile set, and the set names the version behind each column.
CREATE TABLE reid_profile_sets (
    id         VARCHAR(20) PRIMARY KEY,
    versions   JSONB NOT NULL,            -- {"feature_vector": "r50-...", "feature_vector_multiscale": "ms-...", ...}
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Ensemble weight and threshold chosen on the validation split for a pair of embedding versions,
-- with the curve that was searched.
CREATE TABLE reid_ensemble_weights (
    id                  BIGSERIAL PRIMARY KEY,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    version_a           VARCHAR(20) NOT NULL REFERENCES reid_embedding_versions (version),
    version_b           VARCHAR(20) NOT NULL REFERENCES reid_embedding_versions (version),
    weight              DOUBLE PRECISION NOT NULL CHECK (weight BETWEEN 0 AND 1),
    threshold           DOUBLE PRECISION,      -- NULL: no threshold met the false-match budget
    meets_budget        BOOLEAN NOT NULL,
    max_false_match_rate DOUBLE PRECISION NOT NULL,
    search              JSONB NOT NULL
);
CREATE INDEX ix_reid_ensemble_weights_versions ON reid_ensemble_weights (version_a, version_b, created_at DESC);
