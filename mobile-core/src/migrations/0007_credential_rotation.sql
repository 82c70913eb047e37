-- A device credential issued by a rotation that the server has not seen used yet. The phone
-- keeps its current credential beside it until the new one has worked once (the server accepts
-- the old one until then), so that neither a lost answer nor a crash can leave it with no
-- credential the server takes.
ALTER TABLE device ADD COLUMN next_credential TEXT;
