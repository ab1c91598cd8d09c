-- Site identity (bridge.site_id) on every row that leaves a site: devices, telemetry, alerts,
-- the command audit and job runs. Nullable and without a default, so the column can be added to
-- a compressed TimescaleDB hypertable; the store fills existing rows with the local site once,
-- at the first start after this migration (the `site` document records it), and writes the site
-- into every new row. Primary keys are unchanged.
ALTER TABLE devices ADD COLUMN site_id TEXT;
ALTER TABLE battery_status ADD COLUMN site_id TEXT;
ALTER TABLE alerts ADD COLUMN site_id TEXT;
ALTER TABLE commands ADD COLUMN site_id TEXT;
ALTER TABLE job_runs ADD COLUMN site_id TEXT;
