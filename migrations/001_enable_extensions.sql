-- Existing system, migration 001: extensions.
-- gen_random_uuid() is built into PostgreSQL 13+; pgvector provides the VECTOR type.
CREATE EXTENSION IF NOT EXISTS vector;
