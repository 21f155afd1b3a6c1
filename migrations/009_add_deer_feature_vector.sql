-- Existing system, migration 009: ResNet50 profile embedding with an HNSW cosine index.
ALTER TABLE deer ADD COLUMN feature_vector VECTOR(512);
CREATE INDEX ix_deer_feature_vector ON deer USING hnsw (feature_vector vector_cosine_ops);
