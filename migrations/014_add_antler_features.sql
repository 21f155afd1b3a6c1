-- Seed migration 014: antler keypoint features of bucks, used as hard matching constraints.
ALTER TABLE deer
    ADD COLUMN antler_points INTEGER,
    ADD COLUMN antler_description TEXT,
    ADD COLUMN physical_features JSONB;

CREATE INDEX idx_deer_antler_points ON deer (antler_points);
CREATE INDEX idx_deer_physical_features ON deer USING gin (physical_features);
