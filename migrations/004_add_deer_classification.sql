-- Existing system, level 004 (not published in its repository): the detector's class per detection.
-- Vocabulary: buck / doe / fawn / unknown; older rows carry mature / mid / young (buck age classes).
ALTER TABLE detections ADD COLUMN classification VARCHAR(20) NOT NULL DEFAULT 'unknown';
CREATE INDEX ix_detections_classification ON detections (classification);
