-- Detail readings of a sample (meter phases and energy, solar strings, battery detail,
-- diagnostics) as one typed JSON object in TEXT: the keys of Readings in src/domain/sample.rs,
-- nulls left out. NULL for rows written before this migration.
ALTER TABLE battery_status ADD COLUMN readings TEXT CHECK (readings IS NULL OR json_valid(readings));
