//! The scheduler's management handle: list, run now, pause, resume, change or reset a trigger,
//! preview the next fire times, and watch the schedule and its runs. Every call goes through the
//! loop's shared state in the parent module; touches the `Store` (job rows) only through it.

use super::*;

impl SchedulerHandle {
    /// Every job with its trigger, state, next run (local and UTC) and last run.
    pub async fn list(&self) -> Vec<JobView> {
        self.inner.list().await
    }

    /// The retained `<base>/bridge/schedule` document, updated on every change and run.
    pub fn subscribe(&self) -> watch::Receiver<serde_json::Value> {
        self.inner.snapshot.subscribe()
    }

    /// Every finished, failed or missed run as it is recorded (e.g. the health job's result,
    /// which the app publishes on `<base>/bridge/health`).
    pub fn subscribe_runs(&self) -> broadcast::Receiver<JobRunRecord> {
        self.inner.finished.subscribe()
    }

    /// The trigger in force for a job.
    pub async fn trigger_of(&self, id: &str) -> Option<Trigger> {
        self.inner
            .jobs
            .lock()
            .await
            .get(id)
            .map(|j| j.trigger.clone())
    }

    /// The scheduler's zone.
    pub fn timezone(&self) -> Tz {
        self.inner.tz
    }

    /// Runs a job once now (not subject to the grace time), records the run and returns it.
    /// Refused when the job is unknown, disabled or already running.
    pub async fn run_now(&self, id: &str) -> Result<Option<JobRunRecord>, SchedulerError> {
        if self.inner.stop.is_cancelled() {
            return Err(SchedulerError::ShuttingDown);
        }
        let t = self.inner.clock.now().trunc_subsecs(3);
        {
            let mut jobs = self.inner.jobs.lock().await;
            let st = jobs
                .get_mut(id)
                .ok_or_else(|| SchedulerError::UnknownJob(id.to_string()))?;
            if !st.enabled {
                return Err(SchedulerError::Disabled(id.to_string()));
            }
            if st.running {
                return Err(SchedulerError::AlreadyRunning(id.to_string()));
            }
            st.running = true;
        }
        tracing::info!(job_id = %id, scheduled_for = %t, "scheduled_job_run_now");
        let me = self.inner.clone();
        let task = self
            .inner
            .tracker
            .spawn(me.run_submission(id.to_string(), vec![t], true));
        task.await.map_err(|_| SchedulerError::ShuttingDown)
    }

    /// Pauses a job (no further runs until resumed); refused when already paused.
    pub async fn pause(&self, id: &str) -> Result<JobView, SchedulerError> {
        let inner = &self.inner;
        inner
            .edit(id, |st, _| {
                if st.record.paused {
                    return Err(SchedulerError::AlreadyPaused(id.to_string()));
                }
                st.record.paused = true;
                st.record.next_run_at = None;
                Ok(())
            })
            .await?;
        self.view(id).await
    }

    /// Resumes a paused job; its next run is computed from now (refused when not paused).
    pub async fn resume(&self, id: &str) -> Result<JobView, SchedulerError> {
        self.inner
            .edit(id, |st, now| {
                if !st.record.paused {
                    return Err(SchedulerError::NotPaused(id.to_string()));
                }
                st.record.paused = false;
                st.record.next_run_at = first_fire(&st.trigger, now);
                Ok(())
            })
            .await?;
        self.view(id).await
    }

    /// Replaces a job's trigger (validated, persisted, `trigger_overridden = true`).
    pub async fn update_trigger(&self, id: &str, text: &str) -> Result<JobView, SchedulerError> {
        let trigger = Trigger::parse(text, self.inner.tz)?;
        self.inner
            .edit(id, |st, now| {
                st.record.trigger = trigger.to_string();
                st.record.trigger_overridden = true;
                if !st.record.paused {
                    st.record.next_run_at = first_fire(&trigger, now);
                }
                st.trigger = trigger;
                Ok(())
            })
            .await?;
        self.view(id).await
    }

    /// Returns a job to its configured trigger (`trigger_overridden = false`).
    pub async fn reset_trigger(&self, id: &str) -> Result<JobView, SchedulerError> {
        self.inner
            .edit(id, |st, now| {
                st.trigger = st.config_trigger.clone();
                st.record.trigger = st.trigger.to_string();
                st.record.trigger_overridden = false;
                if !st.record.paused {
                    st.record.next_run_at = first_fire(&st.trigger, now);
                }
                Ok(())
            })
            .await?;
        self.view(id).await
    }

    /// The next `n` (at most 1000) fire instants of a job (by id, from its stored phase) or of a
    /// trigger text (`cron:…`, `interval:…`), strictly after `from`, in the scheduler's zone.
    pub async fn preview(
        &self,
        job_or_trigger: &str,
        from: DateTime<Utc>,
        n: usize,
    ) -> Result<Vec<DateTime<Utc>>, SchedulerError> {
        self.preview_in(job_or_trigger, None, from, n).await
    }

    /// Like `preview`, with cron patterns evaluated in `zone` when given (an IANA name).
    pub async fn preview_in(
        &self,
        job_or_trigger: &str,
        zone: Option<&str>,
        from: DateTime<Utc>,
        n: usize,
    ) -> Result<Vec<DateTime<Utc>>, SchedulerError> {
        let n = n.min(1000);
        let tz = match zone {
            Some(z) => parse_zone(z)?,
            None => self.inner.tz,
        };
        let spec = job_or_trigger.trim();
        if spec.starts_with("cron:") || spec.starts_with("interval:") {
            return Ok(Trigger::parse(spec, tz)?.preview(from, n));
        }
        let jobs = self.inner.jobs.lock().await;
        let st = jobs
            .get(spec)
            .ok_or_else(|| SchedulerError::UnknownJob(spec.to_string()))?;
        let trigger = st.trigger.with_zone(tz);
        Ok(match (st.record.next_run_at, &trigger) {
            (Some(next), Trigger::Interval { .. }) if next > from => {
                let mut v = vec![next];
                v.extend(trigger.preview(next, n.saturating_sub(1)));
                v.truncate(n);
                v
            }
            _ => trigger.preview(from, n),
        })
    }

    async fn view(&self, id: &str) -> Result<JobView, SchedulerError> {
        let jobs = self.inner.jobs.lock().await;
        jobs.get(id)
            .map(|st| self.inner.view(id, st))
            .ok_or_else(|| SchedulerError::UnknownJob(id.to_string()))
    }

    /// The known standard job ids.
    pub fn known_ids() -> &'static [&'static str] {
        &JOB_IDS
    }
}
