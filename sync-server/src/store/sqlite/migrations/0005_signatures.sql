-- 0005: tamper evidence. The ed25519 public key a device registered when it enrolled (NULL for
-- devices enrolled before keys existed), and every signature a device made over its shift log's
-- heads, verified before anything of its push was stored.

ALTER TABLE device_credentials ADD COLUMN public_key BLOB
    CHECK (public_key IS NULL OR length(public_key) = 32);

CREATE TABLE shift_log_signatures (
    site_id      TEXT    NOT NULL,
    doc_id       TEXT    NOT NULL,
    -- The signed heads: sorted 32-byte change hashes, concatenated.
    heads        BLOB    NOT NULL,
    -- The device's clock when it signed.
    signed_at    INTEGER NOT NULL,
    signature    BLOB    NOT NULL CHECK (length(signature) = 64),
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (site_id, doc_id, heads),
    FOREIGN KEY (site_id, doc_id) REFERENCES docs (site_id, doc_id)
) STRICT;
