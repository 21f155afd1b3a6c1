-- deer-reid: the marks a person records for a deer (throat patch, flank mark per side, ear notch per
-- ear, a body size class that overrides the measured one). Each save is one row, like a review
-- correction: who, when, the marks before and after; undo sets undone_at, and the deer's current marks
-- are its newest row not undone. Aggregated into deer.physical_features (keys "marks", "body_size").
CREATE TABLE reid_deer_marks (
    id          BIGSERIAL PRIMARY KEY,
    deer_id     UUID NOT NULL REFERENCES deer (id) ON DELETE CASCADE,
    reviewer    VARCHAR(100) NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    source      TEXT NOT NULL,          -- 'review app', or the file a person's records were imported from
    before      JSONB,                  -- the deer's marks before (NULL: none recorded)
    after       JSONB NOT NULL,         -- the marks recorded (only the fields seen)
    undone_at   TIMESTAMPTZ             -- set by undo; an undone row counts for nothing
);
CREATE INDEX ix_reid_deer_marks_deer ON reid_deer_marks (deer_id, id);
CREATE INDEX ix_reid_deer_marks_reviewer ON reid_deer_marks (reviewer, id);
