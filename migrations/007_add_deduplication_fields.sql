-- Existing system, level 007 (its second file numbered 006): overlapping boxes in one photo are
-- flagged as duplicates, photos of one burst (same place, a few seconds apart) share a group.
ALTER TABLE detections
    ADD COLUMN is_duplicate BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN burst_group_id UUID;
CREATE INDEX idx_detections_is_duplicate ON detections (is_duplicate);
CREATE INDEX idx_detections_burst_group ON detections (burst_group_id);
