-- Hourly energy history kept after raw samples are pruned. bucket is the hour's start in
-- microseconds since the Unix epoch (UTC). Columns as in src/store/history.rs.
CREATE TABLE battery_hourly_rollup (
    device_id     TEXT NOT NULL,
    bucket        INTEGER NOT NULL,
    samples       INTEGER NOT NULL CHECK (samples >= 0),
    soc_min       INTEGER CHECK (soc_min BETWEEN 0 AND 100),
    soc_max       INTEGER CHECK (soc_max BETWEEN 0 AND 100),
    soc_sum       REAL NOT NULL,
    soc_count     INTEGER NOT NULL CHECK (soc_count >= 0),
    charged_wh    REAL NOT NULL,
    discharged_wh REAL NOT NULL,
    grid_in_wh    REAL NOT NULL,
    grid_out_wh   REAL NOT NULL,
    PRIMARY KEY (device_id, bucket)
) WITHOUT ROWID;
