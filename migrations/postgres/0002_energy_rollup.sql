-- Hourly energy history kept after raw samples are pruned (plain PostgreSQL; on TimescaleDB the
-- continuous aggregates battery_hourly / battery_daily hold it and this table stays empty).
-- Columns as in src/store/history.rs: SOC as min/max/sum/count, energies in Wh.
CREATE TABLE battery_hourly_rollup (
    device_id     TEXT NOT NULL,
    bucket        TIMESTAMPTZ NOT NULL,
    samples       BIGINT NOT NULL CHECK (samples >= 0),
    soc_min       BIGINT CHECK (soc_min BETWEEN 0 AND 100),
    soc_max       BIGINT CHECK (soc_max BETWEEN 0 AND 100),
    soc_sum       DOUBLE PRECISION NOT NULL,
    soc_count     BIGINT NOT NULL CHECK (soc_count >= 0),
    charged_wh    DOUBLE PRECISION NOT NULL,
    discharged_wh DOUBLE PRECISION NOT NULL,
    grid_in_wh    DOUBLE PRECISION NOT NULL,
    grid_out_wh   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device_id, bucket)
);
