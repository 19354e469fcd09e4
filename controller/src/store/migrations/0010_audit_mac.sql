-- Each audit entry's authentication code: HMAC-SHA256 of its sequence number
-- and hash under a key kept outside the store (store/audit_key.rs), so whoever
-- can write the store file cannot recompute a chain that still verifies.
-- NULL for entries written before this migration until the first start with a
-- key signs them (see README, "What the audit trail proves").
ALTER TABLE audit_log ADD COLUMN mac TEXT;
