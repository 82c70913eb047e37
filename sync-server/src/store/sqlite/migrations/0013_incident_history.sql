-- 0013: incidents' state JSON gains each incident's history (who did what, when; issue 18), and
-- every phone on duty receives every open incident of its site.
--
-- `state_version` is the shape of the state JSON a row holds (`store::incident::STATE_VERSION`).
-- Rows stored before this migration hold 0; the server recomputes them from their documents
-- when it starts (`refresh_incident_states`), through the index below, so that an incident
-- stored before shows its history like one stored after.
ALTER TABLE incidents ADD COLUMN state_version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX incidents_by_state_version ON incidents (state_version);

-- The open incidents of a site, which the sync of every phone on duty reads (closed incidents
-- accumulate, and are not in it). It replaces the open incidents by assignee: the phone of an
-- assignee on duty gets every open incident now, so nothing looks them up by assignee.
CREATE INDEX incidents_open ON incidents (site_id, incident_id) WHERE status <> 'closed';
DROP INDEX incidents_open_by_assignee;
