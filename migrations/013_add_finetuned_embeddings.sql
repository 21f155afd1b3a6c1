-- Seed migration 013: profile embedding from the deer-specific (triplet fine-tuned) ResNet50.
ALTER TABLE deer ADD COLUMN feature_vector_finetuned VECTOR(512);

-- HNSW rather than ivfflat, for the reason given in 012 (no training on an empty table).
CREATE INDEX idx_deer_feature_vector_finetuned
    ON deer USING hnsw (feature_vector_finetuned vector_cosine_ops);
