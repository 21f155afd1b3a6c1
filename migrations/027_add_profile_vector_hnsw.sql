-- deer-reid: matching retrieves each detection's nearest profiles through an HNSW (cosine) index
-- instead of scoring every profile (core/match_retrieval.py); hnsw needs no training on a small or
-- empty table, unlike ivfflat. Profile vectors are stored in the row (PLAIN, 2 KB for 512 floats)
-- rather than out of line, so the exact scan reads no TOAST table either.
CREATE INDEX ix_reid_deer_profiles_vector_hnsw ON reid_deer_profiles USING hnsw (vector vector_cosine_ops);
ALTER TABLE reid_deer_profiles ALTER COLUMN vector SET STORAGE PLAIN;
