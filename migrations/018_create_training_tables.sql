-- Triplet fine-tuning: versioned training manifests (which detection is in which split) and the
-- trained models (checkpoints as versioned artefacts).
CREATE TABLE reid_training_manifests (
    version    VARCHAR(20) PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    config     JSONB NOT NULL,
    stats      JSONB NOT NULL
);

CREATE TABLE reid_training_items (
    version      VARCHAR(20) NOT NULL REFERENCES reid_training_manifests (version) ON DELETE CASCADE,
    detection_id UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    identity     TEXT NOT NULL,
    split        TEXT NOT NULL CHECK (split IN ('train', 'val', 'test')),
    PRIMARY KEY (version, detection_id)
);

CREATE TABLE reid_models (
    version          VARCHAR(20) PRIMARY KEY,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    manifest_version VARCHAR(20) NOT NULL REFERENCES reid_training_manifests (version),
    checkpoint_path  TEXT NOT NULL,
    checkpoint_sha256 CHAR(64) NOT NULL,
    config           JSONB NOT NULL,
    history          JSONB NOT NULL,
    best_val_map     DOUBLE PRECISION,
    device           TEXT NOT NULL
);
