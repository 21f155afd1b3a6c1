-- Existing system, level 010: indexes for date-range and class/confidence queries.
CREATE INDEX idx_images_timestamp ON images ("timestamp");
CREATE INDEX idx_detections_classification_confidence ON detections (classification, confidence DESC);
