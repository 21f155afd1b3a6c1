-- deer-reid review app: merging two deer and splitting a deer move many detections at once. Each moved
-- detection is a 'reassign' correction (queue_reason 'merge' or 'split'); the rows of one merge or split
-- share an operation id, so one undo restores them all.
ALTER TABLE reid_review_corrections ADD COLUMN operation_id UUID;
CREATE INDEX ix_reid_review_corrections_operation ON reid_review_corrections (operation_id);

-- Before cut-over the matcher only proposes: it keeps each proposal's top candidates (deer, similarity,
-- best first) so the review queue can show them without touching the worker's reid_similarity_scores.
ALTER TABLE reid_match_proposals ADD COLUMN candidates JSONB;
