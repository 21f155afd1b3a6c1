-- Write-audit-publish: the audit of a staged embedding version against the published one.
ALTER TABLE reid_embedding_versions
    ADD COLUMN audit_passed BOOLEAN,
    ADD COLUMN audit JSONB,
    ADD COLUMN audited_at TIMESTAMPTZ;
