-- Detail readings of a sample (meter phases and energy, solar strings, battery detail,
-- diagnostics) as one typed JSON object: the keys of Readings in src/domain/sample.rs, nulls
-- left out. NULL for rows written before this migration. Nullable and without a default, so the
-- column can be added to a compressed TimescaleDB hypertable.
ALTER TABLE battery_status ADD COLUMN readings JSONB;
