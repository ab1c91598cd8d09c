//! The site of stored rows: after migration 0008 every row written before it has no site; at
//! the first start the rows of devices, telemetry, alerts, the command audit and job runs get
//! the local site and the `site` document records which one (later starts only read that
//! document). A later start under another `bridge.site_id` leaves the rows as they are and logs
//! `site_changed`. Touches those five tables and the `site` document of the store it is given.

use sqlx::{PgPool, SqlitePool};

use super::StoreError;

/// Key of the document naming the site that the rows from before migration 0008 were given.
pub const SITE_DOC: &str = "site";

/// Tables that carry a `site_id` column.
const TABLES: [&str; 5] = [
    "devices",
    "battery_status",
    "alerts",
    "commands",
    "job_runs",
];

/// PostgreSQL: gives rows without a site the local `site` once (see the module doc).
pub(super) async fn pg_backfill(pool: &PgPool, site: &str) -> Result<(), StoreError> {
    let recorded: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT value FROM documents WHERE key = $1")
            .bind(SITE_DOC)
            .fetch_optional(pool)
            .await?;
    if let Some(doc) = recorded {
        note_change(&doc, site);
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let mut rows = 0;
    for table in TABLES {
        let sql = format!("UPDATE {table} SET site_id = $1 WHERE site_id IS NULL");
        rows += sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(site)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    sqlx::query(
        "INSERT INTO documents (key, value, updated_at) VALUES ($1, $2, now()) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(SITE_DOC)
    .bind(serde_json::json!({ "site_id": site }))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(site, rows, "site_assigned_to_existing_rows");
    Ok(())
}

/// SQLite: gives rows without a site the local `site` once (see the module doc).
pub(super) async fn sqlite_backfill(pool: &SqlitePool, site: &str) -> Result<(), StoreError> {
    let recorded: Option<String> = sqlx::query_scalar("SELECT value FROM documents WHERE key = ?1")
        .bind(SITE_DOC)
        .fetch_optional(pool)
        .await?;
    if let Some(text) = recorded {
        note_change(&serde_json::from_str(&text).unwrap_or_default(), site);
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let mut rows = 0;
    for table in TABLES {
        let sql = format!("UPDATE {table} SET site_id = ?1 WHERE site_id IS NULL");
        rows += sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(site)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    sqlx::query(
        "INSERT INTO documents (key, value, updated_at) \
         VALUES (?1, ?2, CAST(ROUND((julianday('now') - 2440587.5) * 86400000000.0) AS INTEGER)) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(SITE_DOC)
    .bind(serde_json::json!({ "site_id": site }).to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(site, rows, "site_assigned_to_existing_rows");
    Ok(())
}

/// Logs `site_changed` when the recorded site is not the configured one.
fn note_change(doc: &serde_json::Value, site: &str) {
    let before = doc.get("site_id").and_then(|v| v.as_str()).unwrap_or("");
    if before != site {
        tracing::warn!(
            before,
            site,
            "site_changed: rows written before keep their site, new rows get the new one"
        );
    }
}
