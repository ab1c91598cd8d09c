//! Persisted scheduler: cron/interval triggers in a configured zone, APScheduler-style misfire and
//! coalesce rules, bounded workers, the five jobs, desired-state reconciliation and leadership.
