-- The collapse guard of a trained re-ID model: 'ok' or 'collapsed' (never published), with the
-- figures behind the verdict (untrained vs best validation rank-1/mAP, pair cosines, top-PC share).
ALTER TABLE reid_models
    ADD COLUMN status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'collapsed')),
    ADD COLUMN guard  JSONB;
