-- 0005: credentials that age (the PostgreSQL form of SQLite's 0009). A user token gets an
-- expiry, and a rotation keeps the token it replaced for a short overlap; a device credential
-- records when it was issued, and a rotation stores the next one until the phone first uses it.
-- Still only SHA-256 digests are stored.

-- Tokens issued before this migration would otherwise never expire: they get the default
-- lifetime (30 days) from the time of the migration.
ALTER TABLE users ADD COLUMN token_expires_at bigint NOT NULL DEFAULT 0;
UPDATE users SET token_expires_at = (extract(epoch FROM now()) * 1000)::bigint + 2592000000;
-- The token the last rotation replaced, and when it stops working (both or neither).
ALTER TABLE users ADD COLUMN previous_token_hash bytea
    CHECK (previous_token_hash IS NULL OR length(previous_token_hash) = 32);
ALTER TABLE users ADD COLUMN previous_token_expires_at bigint;
CREATE UNIQUE INDEX users_by_previous_token ON users (previous_token_hash)
    WHERE previous_token_hash IS NOT NULL;

-- A credential enrolled before this migration was issued at enrollment.
ALTER TABLE device_credentials ADD COLUMN credential_issued_at bigint NOT NULL DEFAULT 0;
UPDATE device_credentials SET credential_issued_at = enrolled_at;
-- A rotated credential the phone has not used yet: the current one works until it is used.
ALTER TABLE device_credentials ADD COLUMN next_credential_hash bytea
    CHECK (next_credential_hash IS NULL OR length(next_credential_hash) = 32);
ALTER TABLE device_credentials ADD COLUMN next_issued_at bigint;
CREATE UNIQUE INDEX device_credentials_by_next_hash ON device_credentials (next_credential_hash)
    WHERE next_credential_hash IS NOT NULL;
