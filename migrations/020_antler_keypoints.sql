-- Existing system, level 020: antler keypoints of a detection from its pose model, 16 per detection:
-- 0-7 left main_beam, brow_tine, g2, g3, g4, tip, bez_tine, royal_tine; 8-15 the same on the right.
-- visibility 0 = not visible, 1 = occluded, 2 = visible; confidence in [0, 1].
CREATE TABLE antler_keypoints (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    detection_id   UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    keypoint_index INTEGER NOT NULL,
    keypoint_name  VARCHAR(50) NOT NULL,
    x              DOUBLE PRECISION NOT NULL,
    y              DOUBLE PRECISION NOT NULL,
    visibility     INTEGER NOT NULL DEFAULT 2,
    confidence     DOUBLE PRECISION NOT NULL DEFAULT 0.0,
    created_at     TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT valid_keypoint_index CHECK (keypoint_index >= 0 AND keypoint_index <= 15),
    CONSTRAINT valid_visibility CHECK (visibility >= 0 AND visibility <= 2),
    CONSTRAINT valid_confidence CHECK (confidence >= 0.0 AND confidence <= 1.0),
    CONSTRAINT unique_detection_keypoint UNIQUE (detection_id, keypoint_index)
);
CREATE INDEX idx_antler_keypoints_detection_id ON antler_keypoints (detection_id);
CREATE INDEX idx_antler_keypoints_name ON antler_keypoints (keypoint_name);
