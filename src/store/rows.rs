//! Row decoding for both SQL backends: a stored sample or job run back into its domain type,
//! refusing values the domain does not allow (SOC over 100 %, unknown mode or status, bad
//! readings JSON). Pure: touches no database.

/// PostgreSQL rows.
pub(super) mod pg {
    use sqlx::Row;
    use sqlx::postgres::PgRow;

    use crate::domain::{Celsius, DeviceId, Mode, Percent, Readings, Sample, WattHours, Watts};
    use crate::store::{JobRunRecord, StoreError, decode_err, parse_run_status};

    /// The `readings` column (JSONB; NULL before migration 0004).
    pub(crate) fn readings_from_row(r: &PgRow) -> Result<Readings, StoreError> {
        match r.try_get::<Option<serde_json::Value>, _>("readings")? {
            None => Ok(Readings::default()),
            Some(v) => Readings::from_stored_json(v).map_err(|e| decode_err("readings", e)),
        }
    }

    pub(crate) fn sample_from_row(r: &PgRow) -> Result<Sample, StoreError> {
        let device: String = r.try_get("device_id")?;
        let mode: Option<String> = r.try_get("mode")?;
        let soc: Option<i16> = r.try_get("soc")?;
        Ok(Sample {
            device: DeviceId(device),
            at: r.try_get("time")?,
            soc: soc
                .map(|v| Percent::parse(v.into()).map_err(|e| decode_err("soc", e)))
                .transpose()?,
            bat_power: r.try_get::<Option<i32>, _>("bat_power")?.map(Watts),
            grid_power: r.try_get::<Option<i32>, _>("grid_power")?.map(Watts),
            offgrid_power: r.try_get::<Option<i32>, _>("offgrid_power")?.map(Watts),
            pv_power: r.try_get::<Option<i32>, _>("pv_power")?.map(Watts),
            temperature: r.try_get::<Option<f64>, _>("temperature")?.map(Celsius),
            remaining_capacity: r
                .try_get::<Option<f64>, _>("remaining_capacity")?
                .map(WattHours),
            rated_capacity: r
                .try_get::<Option<f64>, _>("rated_capacity")?
                .map(WattHours),
            total_pv_energy: r
                .try_get::<Option<f64>, _>("total_pv_energy")?
                .map(WattHours),
            total_grid_output_energy: r
                .try_get::<Option<f64>, _>("total_grid_output_energy")?
                .map(WattHours),
            total_grid_input_energy: r
                .try_get::<Option<f64>, _>("total_grid_input_energy")?
                .map(WattHours),
            total_load_energy: r
                .try_get::<Option<f64>, _>("total_load_energy")?
                .map(WattHours),
            mode: mode
                .map(|m| Mode::parse(&m).map_err(|e| decode_err("mode", e)))
                .transpose()?,
            ct_connected: r.try_get("ct_connected")?,
            ct_power: r.try_get::<Option<i32>, _>("ct_power")?.map(Watts),
            charge_allowed: r.try_get("charge_allowed")?,
            discharge_allowed: r.try_get("discharge_allowed")?,
            rssi: r.try_get("rssi")?,
            readings: Box::new(readings_from_row(r)?),
        })
    }

    pub(crate) fn job_run_from_row(r: &PgRow) -> Result<JobRunRecord, StoreError> {
        let status: String = r.try_get("status")?;
        Ok(JobRunRecord {
            job_id: r.try_get("job_id")?,
            scheduled_for: r.try_get("scheduled_for")?,
            status: parse_run_status(&status)?,
            instance: r.try_get("instance")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            result: r.try_get("result")?,
            error: r.try_get("error")?,
        })
    }
}

/// SQLite rows (times in µs since the Unix epoch, JSON as text, booleans as 0/1).
pub(super) mod sqlite {
    use chrono::{DateTime, Utc};
    use sqlx::Row;
    use sqlx::sqlite::SqliteRow;

    use crate::domain::{Celsius, DeviceId, Mode, Percent, Readings, Sample, WattHours, Watts};
    use crate::store::{JobRunRecord, StoreError, decode_err, from_micros, parse_run_status};

    pub(crate) fn opt_time(v: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
        v.map(from_micros).transpose()
    }

    pub(crate) fn sample_from_row(r: &SqliteRow) -> Result<Sample, StoreError> {
        let device: String = r.try_get("device_id")?;
        let mode: Option<String> = r.try_get("mode")?;
        let soc: Option<i64> = r.try_get("soc")?;
        Ok(Sample {
            device: DeviceId(device),
            at: from_micros(r.try_get("time")?)?,
            soc: soc
                .map(|v| Percent::parse(v).map_err(|e| decode_err("soc", e)))
                .transpose()?,
            bat_power: r.try_get::<Option<i32>, _>("bat_power")?.map(Watts),
            grid_power: r.try_get::<Option<i32>, _>("grid_power")?.map(Watts),
            offgrid_power: r.try_get::<Option<i32>, _>("offgrid_power")?.map(Watts),
            pv_power: r.try_get::<Option<i32>, _>("pv_power")?.map(Watts),
            temperature: r.try_get::<Option<f64>, _>("temperature")?.map(Celsius),
            remaining_capacity: r
                .try_get::<Option<f64>, _>("remaining_capacity")?
                .map(WattHours),
            rated_capacity: r
                .try_get::<Option<f64>, _>("rated_capacity")?
                .map(WattHours),
            total_pv_energy: r
                .try_get::<Option<f64>, _>("total_pv_energy")?
                .map(WattHours),
            total_grid_output_energy: r
                .try_get::<Option<f64>, _>("total_grid_output_energy")?
                .map(WattHours),
            total_grid_input_energy: r
                .try_get::<Option<f64>, _>("total_grid_input_energy")?
                .map(WattHours),
            total_load_energy: r
                .try_get::<Option<f64>, _>("total_load_energy")?
                .map(WattHours),
            mode: mode
                .map(|m| Mode::parse(&m).map_err(|e| decode_err("mode", e)))
                .transpose()?,
            ct_connected: r.try_get("ct_connected")?,
            ct_power: r.try_get::<Option<i32>, _>("ct_power")?.map(Watts),
            charge_allowed: r.try_get("charge_allowed")?,
            discharge_allowed: r.try_get("discharge_allowed")?,
            rssi: r.try_get("rssi")?,
            readings: Box::new(readings_from_row(r)?),
        })
    }

    /// The `readings` column (typed JSON in TEXT; NULL before migration 0004).
    pub(crate) fn readings_from_row(r: &SqliteRow) -> Result<Readings, StoreError> {
        match r.try_get::<Option<String>, _>("readings")? {
            None => Ok(Readings::default()),
            Some(text) => serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| e.to_string())
                .and_then(Readings::from_stored_json)
                .map_err(|e| decode_err("readings", e)),
        }
    }

    pub(crate) fn json_from_text(
        what: &str,
        v: Option<String>,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        v.map(|s| serde_json::from_str(&s).map_err(|e| decode_err(what, e)))
            .transpose()
    }

    pub(crate) fn json_to_text(what: &str, v: &serde_json::Value) -> Result<String, StoreError> {
        serde_json::to_string(v).map_err(|e| decode_err(what, e))
    }

    pub(crate) fn job_run_from_row(r: &SqliteRow) -> Result<JobRunRecord, StoreError> {
        let status: String = r.try_get("status")?;
        Ok(JobRunRecord {
            job_id: r.try_get("job_id")?,
            scheduled_for: from_micros(r.try_get("scheduled_for")?)?,
            status: parse_run_status(&status)?,
            instance: r.try_get("instance")?,
            started_at: opt_time(r.try_get("started_at")?)?,
            finished_at: opt_time(r.try_get("finished_at")?)?,
            result: json_from_text("job run result", r.try_get("result")?)?,
            error: r.try_get("error")?,
        })
    }
}
