-- 0006: the recent level of the event-id index moves into the writer's memory.
--
-- New ids land on random pages of event_ids_recent, so every commit rewrote most of it (and the
-- checkpoint copied it again): at a million events about as many bytes as the events
-- themselves. The recent ids are the `event_id`s of a site's events after its last fold, so the
-- server now keeps them in memory and rebuilds them from `events` when it starts; a fold moves
-- them into event_ids and the site's watermark to its last event, in one transaction.

CREATE TABLE event_id_folds (
    site_id     TEXT    PRIMARY KEY REFERENCES sites (site_id),
    -- Every event of the site up to this seq has its id in event_ids; the later ones' ids are
    -- only in their events rows.
    through_seq INTEGER NOT NULL
) STRICT;

INSERT INTO event_ids (site_id, event_id, seq)
SELECT site_id, event_id, seq FROM event_ids_recent ORDER BY site_id, event_id;

INSERT INTO event_id_folds (site_id, through_seq) SELECT site_id, next_seq - 1 FROM sites;

DROP TABLE event_ids_recent;

-- Acknowledging an alarm finds its panic event by id; panics are few, so their own index.
CREATE INDEX events_panics ON events (site_id, event_id) WHERE kind = 'panic';
