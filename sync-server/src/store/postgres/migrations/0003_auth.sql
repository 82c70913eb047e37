-- 0003: users and the sites they cover, one-time enrollment codes, and enrolled devices'
-- credentials with their replay counter (the PostgreSQL form of SQLite's 0004). No secret is
-- stored: only the SHA-256 of each token (32 bytes), which the server looks a presented token
-- up by. Users span sites, so `users` alone is not keyed by site (on a distributed engine it is a
-- reference table, copied to every node).

CREATE TABLE users (
    user_id    text    NOT NULL PRIMARY KEY,
    name       text    NOT NULL UNIQUE,
    role       text    NOT NULL CHECK (role IN ('admin', 'operator')),
    -- Every site, present and future (administrators only); otherwise the sites in user_sites.
    all_sites  boolean NOT NULL CHECK (NOT all_sites OR role = 'admin'),
    token_hash bytea   NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at bigint  NOT NULL,
    -- The user who created it; NULL when made with the patrol-server command.
    created_by text,
    revoked_at bigint
);

CREATE TABLE user_sites (
    site_id text NOT NULL REFERENCES sites (site_id),
    user_id text NOT NULL REFERENCES users (user_id),
    PRIMARY KEY (site_id, user_id)
);

-- A user's sites are read on every request it makes.
CREATE INDEX user_sites_by_user ON user_sites (user_id, site_id);

CREATE TABLE enrollment_codes (
    site_id    text   NOT NULL REFERENCES sites (site_id),
    code_hash  bytea  NOT NULL CHECK (length(code_hash) = 32),
    created_by text,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    -- Set once, when a device enrolls with it; the device it made.
    used_at    bigint,
    device_id  text,
    PRIMARY KEY (site_id, code_hash)
);

-- A phone presents the code alone, not its site.
CREATE UNIQUE INDEX enrollment_codes_by_hash ON enrollment_codes (code_hash);

CREATE TABLE device_credentials (
    site_id          text   NOT NULL REFERENCES sites (site_id),
    device_id        text   NOT NULL,
    credential_hash  bytea  NOT NULL CHECK (length(credential_hash) = 32),
    enrolled_at      bigint NOT NULL,
    revoked_at       bigint,
    -- The highest request_seq accepted from the device: a sync whose seq is not greater is a
    -- replay and changes nothing. A sync locks this row, which serialises one device's syncs.
    last_request_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, device_id)
);

-- A sync presents the credential alone.
CREATE UNIQUE INDEX device_credentials_by_hash ON device_credentials (credential_hash);
