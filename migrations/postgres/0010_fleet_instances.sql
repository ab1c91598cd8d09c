-- Which bridge instances forward under each site id on the central database, with the batteries
-- each one has (its configured device ids, sorted, joined by ','). Two instances of one site with
-- the same batteries are a leader and its standby; with different batteries they are two sites
-- claiming one site_id (`site_id_conflict`, shown by `fleet status`).
CREATE TABLE fleet_instances (
    site_id       TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    host          TEXT NOT NULL,
    devices       TEXT NOT NULL,
    first_contact TIMESTAMPTZ NOT NULL,
    last_contact  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (site_id, instance_id)
);
