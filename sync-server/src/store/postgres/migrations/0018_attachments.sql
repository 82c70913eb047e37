-- 0018: attachment blobs (the bytes of files guards attach to incidents), stored in the database
-- so that every server instance sees every upload. Keyed by content hash, not by site: the same
-- photo from two phones (of any sites) is stored once; who may read it is decided by the
-- references in a site's incidents. Bytes are kept in chunks (as uploaded, at most 1 MiB each)
-- so that no single value approaches PostgreSQL's limits and an upload appends without
-- rewriting what came before.
CREATE TABLE blobs (
    sha256    bytea  NOT NULL PRIMARY KEY,
    size      bigint NOT NULL,
    stored_at bigint NOT NULL
);

CREATE TABLE blob_chunks (
    sha256       bytea  NOT NULL REFERENCES blobs (sha256),
    offset_bytes bigint NOT NULL,
    bytes        bytea  NOT NULL,
    PRIMARY KEY (sha256, offset_bytes)
);

-- Unfinished uploads, per device and blob, until whole (then moved to blob_chunks) or stale.
CREATE TABLE blob_uploads (
    device_id    text   NOT NULL,
    sha256       bytea  NOT NULL,
    offset_bytes bigint NOT NULL,
    bytes        bytea  NOT NULL,
    updated_at   bigint NOT NULL,
    PRIMARY KEY (device_id, sha256, offset_bytes)
);

CREATE INDEX blob_uploads_by_age ON blob_uploads (updated_at);
