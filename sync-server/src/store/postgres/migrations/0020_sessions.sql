-- 0020: signing in like a person (the PostgreSQL form of SQLite's 0022; credentials::passwords,
-- credentials::sessions). A user's password as an argon2id PHC string (NULL: none), and the
-- sessions of signed-in browsers, each stored as the SHA-256 of its cookie's token. Like
-- `users`, not keyed by site.
ALTER TABLE users ADD COLUMN password_hash text;

CREATE TABLE user_sessions (
    session_hash bytea  NOT NULL PRIMARY KEY CHECK (length(session_hash) = 32),
    user_id      text   NOT NULL REFERENCES users (user_id),
    created_at   bigint NOT NULL,
    -- The end of its lifetime (--session-ttl-hours from sign-in).
    expires_at   bigint NOT NULL,
    -- Recorded at most once a minute; the idle limit counts from it.
    last_used_at bigint NOT NULL
);

-- A password change or a revocation ends a user's sessions.
CREATE INDEX user_sessions_by_user ON user_sessions (user_id);
-- Sessions past their lifetime are dropped at each sign-in.
CREATE INDEX user_sessions_by_expiry ON user_sessions (expires_at);
