-- The device's ed25519 signing key (its 32-byte secret), made at enrollment: every sync signs
-- the heads of the shift logs it pushes with it (tamper evidence). NULL in a store enrolled
-- before keys existed, or never enrolled; such a store syncs unsigned.
ALTER TABLE device ADD COLUMN signing_key BLOB CHECK (signing_key IS NULL OR length(signing_key) = 32);
