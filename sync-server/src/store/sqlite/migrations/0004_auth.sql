-- 0004: users and the sites they cover, one-time enrollment codes, and enrolled devices'
-- credentials with their replay counter. No secret is stored: only the SHA-256 of each token
-- (32 bytes), which the server looks a presented token up by.

CREATE TABLE users (
    user_id    TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL CHECK (role IN ('admin', 'operator')),
    -- 1: every site, present and future (administrators only); 0: the sites in user_sites.
    all_sites  INTEGER NOT NULL CHECK (all_sites IN (0, 1) AND (all_sites = 0 OR role = 'admin')),
    token_hash BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at INTEGER NOT NULL,
    -- The user who created it; NULL when made with the patrol-server command.
    created_by TEXT,
    revoked_at INTEGER
) STRICT;

CREATE TABLE user_sites (
    site_id TEXT NOT NULL REFERENCES sites (site_id),
    user_id TEXT NOT NULL REFERENCES users (user_id),
    PRIMARY KEY (site_id, user_id)
) STRICT, WITHOUT ROWID;

-- A user's sites are read on every request it makes.
CREATE INDEX user_sites_by_user ON user_sites (user_id, site_id);

CREATE TABLE enrollment_codes (
    site_id    TEXT    NOT NULL REFERENCES sites (site_id),
    code_hash  BLOB    NOT NULL CHECK (length(code_hash) = 32),
    created_by TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- Set once, when a device enrolls with it; the device it made.
    used_at    INTEGER,
    device_id  TEXT,
    PRIMARY KEY (site_id, code_hash)
) STRICT;

-- A phone presents the code alone, not its site.
CREATE UNIQUE INDEX enrollment_codes_by_hash ON enrollment_codes (code_hash);

CREATE TABLE device_credentials (
    site_id          TEXT    NOT NULL REFERENCES sites (site_id),
    device_id        TEXT    NOT NULL,
    credential_hash  BLOB    NOT NULL CHECK (length(credential_hash) = 32),
    enrolled_at      INTEGER NOT NULL,
    revoked_at       INTEGER,
    -- The highest request_seq accepted from the device: a sync whose seq is not greater is a
    -- replay and changes nothing.
    last_request_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, device_id)
) STRICT;

-- A sync presents the credential alone.
CREATE UNIQUE INDEX device_credentials_by_hash ON device_credentials (credential_hash);
