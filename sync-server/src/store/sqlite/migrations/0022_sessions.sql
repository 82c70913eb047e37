-- 0022: signing in like a person (credentials::passwords, credentials::sessions). A user's
-- password as an argon2id PHC string (NULL: none; the user signs in with its token only), and
-- the sessions of signed-in browsers, each stored as the SHA-256 of its cookie's token.
ALTER TABLE users ADD COLUMN password_hash TEXT;

CREATE TABLE user_sessions (
    session_hash BLOB    NOT NULL PRIMARY KEY CHECK (length(session_hash) = 32),
    user_id      TEXT    NOT NULL REFERENCES users (user_id),
    created_at   INTEGER NOT NULL,
    -- The end of its lifetime (--session-ttl-hours from sign-in).
    expires_at   INTEGER NOT NULL,
    -- Recorded at most once a minute; the idle limit counts from it.
    last_used_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A password change or a revocation ends a user's sessions.
CREATE INDEX user_sessions_by_user ON user_sessions (user_id);
-- Sessions past their lifetime are dropped at each sign-in.
CREATE INDEX user_sessions_by_expiry ON user_sessions (expires_at);
