-- Existing system, migration 004: camera photos.
CREATE TABLE images (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    filename          VARCHAR(255) NOT NULL,
    path              VARCHAR(512) NOT NULL UNIQUE,
    "timestamp"       TIMESTAMPTZ NOT NULL,            -- capture time
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    location_id       UUID REFERENCES locations (id) ON DELETE SET NULL,
    exif_data         JSON,
    processing_status processingstatus NOT NULL DEFAULT 'pending',
    error_message     TEXT
);
CREATE INDEX ix_images_timestamp ON images ("timestamp");
CREATE INDEX ix_images_location_id ON images (location_id);
CREATE INDEX ix_images_processing_status ON images (processing_status);
