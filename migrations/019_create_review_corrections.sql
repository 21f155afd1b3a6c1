-- deer-reid review app: every decision a person takes in the review queue, with the detection's
-- review fields before and after, so it can be audited, undone and turned into training labels.
CREATE TABLE reid_review_corrections (
    id               BIGSERIAL PRIMARY KEY,
    detection_id     UUID NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    action           TEXT NOT NULL CHECK (action IN ('confirm', 'reassign', 'new_deer', 'not_deer', 'skip')),
    reviewer         VARCHAR(100) NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    queue_reason     TEXT,                 -- uncertain / new_animal / audit: why the queue showed it
    proposed_deer_id UUID,                 -- the matcher's proposal the person saw (NULL: none)
    before           JSONB NOT NULL,       -- the detection's deer and review fields before
    after            JSONB NOT NULL,       -- ... and after
    undone_at        TIMESTAMPTZ           -- set by undo; an undone correction counts for nothing
);
CREATE INDEX ix_reid_review_corrections_detection ON reid_review_corrections (detection_id);
CREATE INDEX ix_reid_review_corrections_created ON reid_review_corrections (created_at);
