-- Existing system, level 012 (its week-1 "reid enhancement", already applied on its database):
-- multi-scale ResNet50 and EfficientNet-B0 profile vectors, which its worker's ensemble matcher
-- reads, and the version tag of the vectors on a deer row.
ALTER TABLE deer
    ADD COLUMN feature_vector_multiscale VECTOR(512),
    ADD COLUMN feature_vector_efficientnet VECTOR(512),
    ADD COLUMN embedding_version VARCHAR(20) DEFAULT 'v1_resnet50';

-- HNSW needs no training, so it keeps its recall on a table that starts empty (ivfflat would not).
CREATE INDEX ix_deer_feature_vector_multiscale_hnsw ON deer
    USING hnsw (feature_vector_multiscale vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX ix_deer_feature_vector_efficientnet_hnsw ON deer
    USING hnsw (feature_vector_efficientnet vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX ix_deer_embedding_version ON deer (embedding_version);
