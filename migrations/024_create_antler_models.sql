-- deer-reid: trained antler keypoint models (YOLOv8-pose) as versioned artefacts: the checkpoint
-- file, its sha256, what it started from and the metrics of its validation.
CREATE TABLE reid_antler_models (
    version           VARCHAR(20) PRIMARY KEY,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    checkpoint_path   TEXT NOT NULL,
    checkpoint_sha256 CHAR(64) NOT NULL,
    started_from      TEXT NOT NULL,
    pretrained        BOOLEAN NOT NULL,
    profile           TEXT NOT NULL,
    device            TEXT NOT NULL,
    train_photos      INTEGER NOT NULL,
    val_photos        INTEGER NOT NULL,
    metrics           JSONB NOT NULL
);
