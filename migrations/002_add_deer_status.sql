-- Existing system, level 002 (its "add deer status", not published in its repository): management
-- fields of a deer profile. Types and names from its Deer model.
CREATE TYPE deerstatus AS ENUM ('alive', 'deceased', 'unknown');

ALTER TABLE deer
    ADD COLUMN status     deerstatus NOT NULL DEFAULT 'alive',
    ADD COLUMN species    VARCHAR(100) NOT NULL DEFAULT 'white_tailed_deer',
    ADD COLUMN notes      VARCHAR(1000),
    ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN updated_at TIMESTAMPTZ;
CREATE INDEX ix_deer_status ON deer (status);
