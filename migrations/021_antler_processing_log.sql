-- Existing system, level 021: which detections its antler model has looked at, found antlers or not.
CREATE TABLE antler_processing_log (
    detection_id     UUID PRIMARY KEY REFERENCES detections (id) ON DELETE CASCADE,
    processed_at     TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    antlers_detected BOOLEAN NOT NULL,
    keypoints_count  INTEGER NOT NULL DEFAULT 0,
    model_version    VARCHAR(100) NOT NULL,
    processing_notes TEXT,
    CONSTRAINT valid_keypoints_count CHECK (keypoints_count >= 0)
);
CREATE INDEX idx_antler_processing_detected ON antler_processing_log (antlers_detected);
CREATE INDEX idx_antler_processing_timestamp ON antler_processing_log (processed_at);
CREATE INDEX idx_antler_processing_model ON antler_processing_log (model_version);

-- Keypoints stored before this log existed count as processed, antlers found.
INSERT INTO antler_processing_log (detection_id, processed_at, antlers_detected, keypoints_count, model_version)
SELECT detection_id, COALESCE(min(created_at), CURRENT_TIMESTAMP), TRUE, count(*), 'unknown (before the log)'
FROM antler_keypoints GROUP BY detection_id
ON CONFLICT (detection_id) DO NOTHING;
