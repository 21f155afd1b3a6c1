-- Existing system, migration 002: enum types used by images and deer.
CREATE TYPE processingstatus AS ENUM ('pending', 'processing', 'completed', 'failed');
CREATE TYPE deersex AS ENUM ('buck', 'doe', 'fawn', 'unknown');
CREATE TYPE deerstatus AS ENUM ('alive', 'deceased', 'unknown');
