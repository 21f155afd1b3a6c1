-- Existing system, migration 008: burst grouping and duplicate flags.
ALTER TABLE detections
    ADD COLUMN is_duplicate BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN burst_group_id UUID;
CREATE INDEX ix_detections_burst_group_id ON detections (burst_group_id);
