-- Existing system, migration 007: human review of detections.
ALTER TABLE detections
    ADD COLUMN is_reviewed BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN is_valid BOOLEAN NOT NULL DEFAULT TRUE,
    ADD COLUMN corrected_classification VARCHAR(20),
    ADD COLUMN correction_notes TEXT,
    ADD COLUMN reviewed_by VARCHAR(100),
    ADD COLUMN reviewed_at TIMESTAMPTZ;
