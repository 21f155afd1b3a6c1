-- Existing system, level 006: the photo shown for a deer in its UI.
ALTER TABLE deer ADD COLUMN best_photo_id UUID;
ALTER TABLE deer ADD CONSTRAINT fk_deer_best_photo
    FOREIGN KEY (best_photo_id) REFERENCES images (id) ON DELETE SET NULL;
CREATE INDEX ix_deer_best_photo_id ON deer (best_photo_id);
