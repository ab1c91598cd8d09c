-- The central side of store-and-forward ([central] url on the edge bridges): what every site
-- forwarded, keyed by site. Created in every PostgreSQL database the bridge migrates, empty
-- unless edges forward into it. On TimescaleDB the forwarder makes fleet_battery_status a
-- hypertable compressed by (site_id, device_id) with a retention policy (central.retention_days).
-- A replayed row meets the primary key and is ignored (ON CONFLICT DO NOTHING).

-- One row per site: last contact (central clock) and what the edge said was still pending.
CREATE TABLE fleet_sites (
    site_id       TEXT PRIMARY KEY,
    first_contact TIMESTAMPTZ NOT NULL,
    last_contact  TIMESTAMPTZ NOT NULL,
    backlog       BIGINT NOT NULL DEFAULT 0,
    dropped       BIGINT NOT NULL DEFAULT 0,
    version       TEXT NOT NULL
);

CREATE TABLE fleet_devices (
    site_id      TEXT NOT NULL,
    id           TEXT NOT NULL,
    model        TEXT NOT NULL,
    firmware     BIGINT NOT NULL,
    address      TEXT NOT NULL,
    last_seen_at TIMESTAMPTZ,
    PRIMARY KEY (site_id, id)
);

-- Telemetry as the edges stored it, plus edge_seq (the edge's insertion order) and received_at
-- (central clock, per row) so that the order of arrival can be checked.
CREATE TABLE fleet_battery_status (
    site_id                  TEXT NOT NULL,
    device_id                TEXT NOT NULL,
    time                     TIMESTAMPTZ NOT NULL,
    soc                      SMALLINT,
    bat_power                INTEGER,
    grid_power               INTEGER,
    offgrid_power            INTEGER,
    pv_power                 INTEGER,
    temperature              DOUBLE PRECISION,
    remaining_capacity       DOUBLE PRECISION,
    rated_capacity           DOUBLE PRECISION,
    total_pv_energy          DOUBLE PRECISION,
    total_grid_output_energy DOUBLE PRECISION,
    total_grid_input_energy  DOUBLE PRECISION,
    total_load_energy        DOUBLE PRECISION,
    mode                     TEXT,
    ct_connected             BOOLEAN,
    ct_power                 INTEGER,
    charge_allowed           BOOLEAN,
    discharge_allowed        BOOLEAN,
    rssi                     INTEGER,
    readings                 JSONB,
    edge_seq                 BIGINT NOT NULL,
    received_at              TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (site_id, device_id, time)
);
CREATE INDEX fleet_battery_status_time ON fleet_battery_status (time);

-- The command audit of every site; edge_id is the id of the row on the edge.
CREATE TABLE fleet_commands (
    site_id    TEXT NOT NULL,
    edge_id    BIGINT NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    source     TEXT NOT NULL,
    device     TEXT NOT NULL,
    payload    JSONB NOT NULL,
    status     TEXT NOT NULL,
    error      TEXT,
    latency_ms DOUBLE PRECISION,
    PRIMARY KEY (site_id, edge_id)
);
CREATE INDEX fleet_commands_at ON fleet_commands (at);
