-- Existing system, migration 010: profile confidence and sighting statistics.
ALTER TABLE deer
    ADD COLUMN confidence DOUBLE PRECISION,
    ADD COLUMN sighting_count INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN first_seen TIMESTAMPTZ,
    ADD COLUMN last_seen TIMESTAMPTZ;
