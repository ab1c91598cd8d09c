//! The clock every time-driven part uses (scheduler, reconciler, Tempo), injected so tests can
//! move time: the system clock for the daemon and a manual clock that tests set or advance
//! (waking every sleeper), optionally jumping to the end of every sleep. No I/O.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;

/// Wall-clock time source with an awaitable sleep.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// Current instant (UTC).
    fn now(&self) -> DateTime<Utc>;
    /// Returns once `now() >= t` (may return early; callers re-check).
    async fn sleep_until(&self, t: DateTime<Utc>);
}

/// The system clock; sleeps are capped at 60 s so wall-clock jumps (suspend, NTP) are noticed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        let wait = (t - Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(Duration::from_secs(60));
        tokio::time::sleep(wait).await;
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    changed: Notify,
    auto_advance: bool,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
            changed: Notify::new(),
            auto_advance: false,
        }
    }

    /// A clock at `start` whose sleeps return at once, moving the clock to their end (a day of
    /// retries runs in microseconds).
    pub fn auto_advance(start: DateTime<Utc>) -> Self {
        Self {
            auto_advance: true,
            ..Self::new(start)
        }
    }

    /// Sets the time (may go backwards) and wakes sleepers.
    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock() {
            *now = t;
        }
        self.changed.notify_waiters();
    }

    /// Moves the time forward by `d` and wakes sleepers.
    pub fn advance(&self, d: Duration) {
        let step = TimeDelta::from_std(d).unwrap_or(TimeDelta::zero());
        if let Ok(mut now) = self.now.lock() {
            *now += step;
        }
        self.changed.notify_waiters();
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now
            .lock()
            .map(|n| *n)
            .unwrap_or_else(|p| *p.into_inner())
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        if self.auto_advance {
            if self.now() < t {
                self.set(t);
            }
            return;
        }
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.now() >= t {
                return;
            }
            notified.await;
        }
    }
}
