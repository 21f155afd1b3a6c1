-- Existing system, migration 006: deer detections in images (deer_id NULL = unassigned).
CREATE TABLE detections (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    image_id       UUID NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    deer_id        UUID REFERENCES deer (id) ON DELETE SET NULL,
    bbox           JSON NOT NULL,                    -- {"x":..,"y":..,"width":..,"height":..} in pixels
    confidence     DOUBLE PRECISION NOT NULL,
    classification VARCHAR(20),                      -- buck / doe / fawn / unknown
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_detections_image_id ON detections (image_id);
CREATE INDEX ix_detections_deer_id ON detections (deer_id);
