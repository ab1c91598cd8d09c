-- marstek-bridge schema, SQLite. Every timestamp is an INTEGER of microseconds since the Unix
-- epoch (UTC): exact, ordered and cheap to compare. Read them with
-- datetime(col / 1000000, 'unixepoch'). Dates are TEXT 'YYYY-MM-DD'. JSON is TEXT.

CREATE TABLE devices (
    id            TEXT PRIMARY KEY NOT NULL,
    model         TEXT NOT NULL,
    firmware      INTEGER NOT NULL CHECK (firmware >= 0),
    ble_mac       TEXT NOT NULL,
    wifi_mac      TEXT,
    address       TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER
);

-- One row per (device, instant); the primary key makes a duplicate sample impossible.
CREATE TABLE battery_status (
    device_id                TEXT NOT NULL,
    time                     INTEGER NOT NULL,
    soc                      INTEGER CHECK (soc BETWEEN 0 AND 100),
    bat_power                INTEGER,
    grid_power               INTEGER,
    offgrid_power            INTEGER,
    pv_power                 INTEGER,
    temperature              REAL,
    remaining_capacity       REAL,
    rated_capacity           REAL,
    total_pv_energy          REAL,
    total_grid_output_energy REAL,
    total_grid_input_energy  REAL,
    total_load_energy        REAL,
    mode                     TEXT,
    ct_connected             INTEGER CHECK (ct_connected IN (0, 1)),
    ct_power                 INTEGER,
    charge_allowed           INTEGER CHECK (charge_allowed IN (0, 1)),
    discharge_allowed        INTEGER CHECK (discharge_allowed IN (0, 1)),
    rssi                     INTEGER,
    PRIMARY KEY (device_id, time)
) WITHOUT ROWID;
CREATE INDEX battery_status_time ON battery_status (time);

-- Bridge-level alerts use device_id = '' so that "one open alert per kind and device" holds.
CREATE TABLE alerts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    device_id  TEXT NOT NULL DEFAULT '',
    severity   TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    message    TEXT NOT NULL,
    value      REAL,
    threshold  REAL,
    raised_at  INTEGER NOT NULL,
    cleared_at INTEGER
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (kind, device_id) WHERE cleared_at IS NULL;
CREATE INDEX alerts_raised_at ON alerts (raised_at);

CREATE TABLE commands (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    source     TEXT NOT NULL,
    device     TEXT NOT NULL,
    payload    TEXT NOT NULL CHECK (json_valid(payload)),
    status     TEXT NOT NULL,
    error      TEXT,
    latency_ms REAL
);
CREATE INDEX commands_at ON commands (at DESC, id DESC);

CREATE TABLE scheduled_jobs (
    id                 TEXT PRIMARY KEY NOT NULL,
    trigger            TEXT NOT NULL,
    trigger_overridden INTEGER NOT NULL DEFAULT 0 CHECK (trigger_overridden IN (0, 1)),
    next_run_at        INTEGER,
    paused             INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    last_run_at        INTEGER,
    last_status        TEXT
);

-- The unique (job_id, scheduled_for) is what lets exactly one instance claim a run.
CREATE TABLE job_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL,
    scheduled_for INTEGER NOT NULL,
    status        TEXT NOT NULL
        CHECK (status IN ('running', 'completed', 'failed', 'missed', 'skipped')),
    instance      TEXT NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    result        TEXT CHECK (result IS NULL OR json_valid(result)),
    error         TEXT,
    UNIQUE (job_id, scheduled_for)
);
CREATE INDEX job_runs_scheduled_for ON job_runs (scheduled_for DESC);

CREATE TABLE desired_state (
    device_id   TEXT PRIMARY KEY NOT NULL,
    config      TEXT NOT NULL CHECK (json_valid(config)),
    set_by      TEXT NOT NULL,
    set_at      INTEGER NOT NULL,
    valid_until INTEGER
);

CREATE TABLE tempo_days (
    date       TEXT PRIMARY KEY NOT NULL,
    colour     TEXT NOT NULL CHECK (colour IN ('blue', 'white', 'red')),
    source     TEXT NOT NULL,
    fetched_at INTEGER NOT NULL
);

CREATE TABLE documents (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL CHECK (json_valid(value)),
    updated_at INTEGER NOT NULL
);

-- One lease row; acquired_at and expires_at come from the database clock (microseconds).
CREATE TABLE leader (
    name        TEXT PRIMARY KEY NOT NULL,
    instance    TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
