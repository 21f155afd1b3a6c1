-- Existing system, migration 005: deer profiles (one row per known individual).
CREATE TABLE deer (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name       VARCHAR(100),
    sex        deersex NOT NULL DEFAULT 'unknown',
    status     deerstatus NOT NULL DEFAULT 'alive',
    species    VARCHAR(50) NOT NULL DEFAULT 'white_tailed_deer',
    notes      TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_deer_sex ON deer (sex);
