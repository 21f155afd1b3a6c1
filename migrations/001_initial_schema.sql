-- Existing system (thumper_counter), level 001: the first tables, as its SQLAlchemy models
-- create them with Base.metadata.create_all(). Facts taken from its src/backend/models/*.py:
-- ids are client-side UUIDs (no database default), timestamps and counters are filled in by the
-- application (no server defaults), indexes carry SQLAlchemy's ix_<table>_<column> names.
-- Columns that its later migrations add are created by the files that follow (002-012), each in
-- its final form, so that every object belongs to exactly one level (adoption checks levels by
-- shape; see deer_reid_assets/core/store/adopt.py).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TYPE deersex AS ENUM ('buck', 'doe', 'fawn', 'unknown');

CREATE TABLE locations (
    id          UUID NOT NULL,
    name        VARCHAR(100) NOT NULL,
    description TEXT,
    coordinates JSON,                 -- {"lat": .., "lon": ..}
    active      BOOLEAN NOT NULL,
    image_count INTEGER NOT NULL,
    CONSTRAINT locations_pkey PRIMARY KEY (id)
);
CREATE UNIQUE INDEX ix_locations_name ON locations (name);
CREATE INDEX ix_locations_active ON locations (active);
CREATE INDEX ix_locations_active_name ON locations (active, name);

CREATE TABLE images (
    id          UUID NOT NULL,
    filename    VARCHAR(255) NOT NULL,
    path        VARCHAR(512) NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,  -- capture time
    created_at  TIMESTAMPTZ NOT NULL,
    location_id UUID,
    exif_data   JSON,
    CONSTRAINT images_pkey PRIMARY KEY (id),
    CONSTRAINT images_path_key UNIQUE (path),
    CONSTRAINT images_location_id_fkey FOREIGN KEY (location_id) REFERENCES locations (id) ON DELETE SET NULL
);
CREATE INDEX ix_images_timestamp ON images ("timestamp");
CREATE INDEX ix_images_location_id ON images (location_id);
CREATE INDEX ix_images_location_timestamp ON images (location_id, "timestamp");

-- One row per known individual. feature_vector is created here in its final type (its 005 converted
-- an earlier double precision[] column in place).
CREATE TABLE deer (
    id             UUID NOT NULL,
    name           VARCHAR(100),
    sex            deersex NOT NULL,
    first_seen     TIMESTAMPTZ NOT NULL,
    last_seen      TIMESTAMPTZ NOT NULL,
    feature_vector VECTOR(512),
    confidence     DOUBLE PRECISION NOT NULL,
    sighting_count INTEGER NOT NULL,
    CONSTRAINT deer_pkey PRIMARY KEY (id)
);
CREATE INDEX ix_deer_sex ON deer (sex);
CREATE INDEX ix_deer_first_seen ON deer (first_seen);
CREATE INDEX ix_deer_last_seen ON deer (last_seen);
CREATE INDEX ix_deer_last_seen_sex ON deer (last_seen, sex);
CREATE INDEX ix_deer_sighting_count ON deer (sighting_count);

-- A deer found in a photo; deer_id NULL until re-identification links it.
CREATE TABLE detections (
    id         UUID NOT NULL,
    image_id   UUID NOT NULL,
    deer_id    UUID,
    bbox       JSON NOT NULL,          -- {"x":..,"y":..,"width":..,"height":..} in pixels
    confidence DOUBLE PRECISION NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT detections_pkey PRIMARY KEY (id),
    CONSTRAINT detections_image_id_fkey FOREIGN KEY (image_id) REFERENCES images (id) ON DELETE CASCADE,
    CONSTRAINT detections_deer_id_fkey FOREIGN KEY (deer_id) REFERENCES deer (id) ON DELETE SET NULL
);
CREATE INDEX ix_detections_image_id ON detections (image_id);
CREATE INDEX ix_detections_deer_id ON detections (deer_id);
CREATE INDEX ix_detections_image_deer ON detections (image_id, deer_id);
CREATE INDEX ix_detections_confidence ON detections (confidence);
