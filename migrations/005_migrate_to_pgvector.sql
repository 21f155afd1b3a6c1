-- Existing system, level 005: cosine (HNSW) index on the ResNet50 profile vector its worker matches
-- against. (The column itself is created in 001 in its final VECTOR(512) type.)
CREATE INDEX ix_deer_feature_vector_hnsw ON deer USING hnsw (feature_vector vector_cosine_ops);
