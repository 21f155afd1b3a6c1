-- Existing system, level 009: human review of a detection (verified, usable, corrected class).
ALTER TABLE detections
    ADD COLUMN is_reviewed BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN is_valid BOOLEAN NOT NULL DEFAULT TRUE,
    ADD COLUMN corrected_classification VARCHAR(20),
    ADD COLUMN correction_notes TEXT,
    ADD COLUMN reviewed_by VARCHAR(100),
    ADD COLUMN reviewed_at TIMESTAMPTZ;
CREATE INDEX ix_detections_is_reviewed ON detections (is_reviewed);
CREATE INDEX ix_detections_is_valid ON detections (is_valid);
