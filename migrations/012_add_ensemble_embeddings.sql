-- Seed migration 012: multi-scale ResNet50 and EfficientNet-B0 profile embeddings.
ALTER TABLE deer
    ADD COLUMN feature_vector_multiscale VECTOR(512),
    ADD COLUMN feature_vector_efficientnet VECTOR(512),
    ADD COLUMN embedding_version VARCHAR(20) DEFAULT 'baseline';

-- Index type: HNSW, not ivfflat. These columns start empty and hold one row per deer profile
-- (165 today). ivfflat trains its list centroids when the index is built, so building it on an
-- empty or tiny table gives centroids that do not describe the later data and poor recall, and it
-- would have to be rebuilt after every bulk load. HNSW needs no training, keeps good recall as rows
-- arrive, and at a few hundred rows costs nothing. The seed's index names are kept.
CREATE INDEX idx_deer_feature_vector_multiscale
    ON deer USING hnsw (feature_vector_multiscale vector_cosine_ops);
CREATE INDEX idx_deer_feature_vector_efficientnet
    ON deer USING hnsw (feature_vector_efficientnet vector_cosine_ops);
