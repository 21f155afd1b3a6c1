-- Existing system, level 003 (the file its repository ships as 001_add_processing_status.sql):
-- where each photo is in its worker's pipeline, lower-case states, and the failure reason.
CREATE TYPE processingstatus AS ENUM ('pending', 'processing', 'completed', 'failed');

ALTER TABLE images
    ADD COLUMN processing_status processingstatus NOT NULL DEFAULT 'pending',
    ADD COLUMN error_message TEXT;
CREATE INDEX idx_images_processing_status ON images (processing_status);
