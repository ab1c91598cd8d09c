-- marstek-bridge schema, PostgreSQL. Timestamps are timestamptz (UTC).
-- TimescaleDB is NOT required here: when the extension is available the store turns
-- battery_status into a hypertable in a separate, idempotent step at start-up.

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    model         TEXT NOT NULL,
    firmware      BIGINT NOT NULL CHECK (firmware >= 0),
    ble_mac       TEXT NOT NULL,
    wifi_mac      TEXT,
    address       TEXT NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ
);

-- One row per (device, instant); the primary key makes a duplicate sample impossible.
CREATE TABLE battery_status (
    device_id                TEXT NOT NULL,
    time                     TIMESTAMPTZ NOT NULL,
    soc                      SMALLINT CHECK (soc BETWEEN 0 AND 100),
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
    PRIMARY KEY (device_id, time)
);
CREATE INDEX battery_status_time ON battery_status (time);

-- Bridge-level alerts use device_id = '' so that "one open alert per kind and device" holds.
CREATE TABLE alerts (
    id         BIGSERIAL PRIMARY KEY,
    kind       TEXT NOT NULL,
    device_id  TEXT NOT NULL DEFAULT '',
    severity   TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    message    TEXT NOT NULL,
    value      DOUBLE PRECISION,
    threshold  DOUBLE PRECISION,
    raised_at  TIMESTAMPTZ NOT NULL,
    cleared_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (kind, device_id) WHERE cleared_at IS NULL;
CREATE INDEX alerts_raised_at ON alerts (raised_at);

CREATE TABLE commands (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    source     TEXT NOT NULL,
    device     TEXT NOT NULL,
    payload    JSONB NOT NULL,
    status     TEXT NOT NULL,
    error      TEXT,
    latency_ms DOUBLE PRECISION
);
CREATE INDEX commands_at ON commands (at DESC, id DESC);

CREATE TABLE scheduled_jobs (
    id                 TEXT PRIMARY KEY,
    trigger            TEXT NOT NULL,
    trigger_overridden BOOLEAN NOT NULL DEFAULT FALSE,
    next_run_at        TIMESTAMPTZ,
    paused             BOOLEAN NOT NULL DEFAULT FALSE,
    last_run_at        TIMESTAMPTZ,
    last_status        TEXT
);

-- The unique (job_id, scheduled_for) is what lets exactly one instance claim a run.
CREATE TABLE job_runs (
    id            BIGSERIAL PRIMARY KEY,
    job_id        TEXT NOT NULL,
    scheduled_for TIMESTAMPTZ NOT NULL,
    status        TEXT NOT NULL
        CHECK (status IN ('running', 'completed', 'failed', 'missed', 'skipped')),
    instance      TEXT NOT NULL,
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    result        JSONB,
    error         TEXT,
    UNIQUE (job_id, scheduled_for)
);
CREATE INDEX job_runs_scheduled_for ON job_runs (scheduled_for DESC);

CREATE TABLE desired_state (
    device_id   TEXT PRIMARY KEY,
    config      JSONB NOT NULL,
    set_by      TEXT NOT NULL,
    set_at      TIMESTAMPTZ NOT NULL,
    valid_until TIMESTAMPTZ
);

CREATE TABLE tempo_days (
    date       DATE PRIMARY KEY,
    colour     TEXT NOT NULL CHECK (colour IN ('blue', 'white', 'red')),
    source     TEXT NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE documents (
    key        TEXT PRIMARY KEY,
    value      JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One lease row; expires_at is set from the database clock.
CREATE TABLE leader (
    name        TEXT PRIMARY KEY,
    instance    TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
