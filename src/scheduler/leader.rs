//! One leader per site among several bridges sharing a PostgreSQL database: the lease is named
//! after the site ([`site_lease`]: `site:<site_id>`), so bridges of different sites sharing one
//! database never block each other and two bridges of one site elect one. Each instance renews
//! the lease through `Store::try_lead` every quarter of the hand-over bound, with a lease of
//! three quarters of it, so a dead leader is replaced within the bound. Leadership is a
//! `watch::Receiver<bool>` the scheduler loop (and polling) follows, and the holder's instance
//! id a second one (what a standby names); a failed renewal steps down at once. A clean stop
//! resigns so another instance takes over immediately. Touches only the store's lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// A running leadership loop.
pub struct Leadership {
    rx: watch::Receiver<bool>,
    holder: watch::Receiver<Option<String>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Whether this instance leads now, and its changes.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// The instance holding the site's lease (this one when leading), as last seen, and its
    /// changes; None when nobody holds it or the store could not be read.
    pub fn holder(&self) -> watch::Receiver<Option<String>> {
        self.holder.clone()
    }

    /// Whether this instance leads now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Clean stop: stops renewing and resigns the lease, so another instance takes over now.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }

    /// Abrupt stop (as if the process died): stops renewing without resigning; the lease runs
    /// out on its own. The receiver reports `false` (sender gone).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Lease length and renewal period for a hand-over bound.
pub fn lease_timing(bound: Duration) -> (Duration, Duration) {
    let lease = bound.mul_f64(0.75).max(Duration::from_millis(750));
    let every = bound.mul_f64(0.25).max(Duration::from_millis(250));
    (lease, every)
}

/// The name of a site's lease: `site:<site_id>`.
pub fn site_lease(site_id: &str) -> String {
    format!("site:{site_id}")
}

/// The instance holding `lease` after an attempt that gave `leading`.
async fn holder_after(store: &dyn Store, lease: &str, me: &str, leading: bool) -> Option<String> {
    if leading {
        return Some(me.to_string());
    }
    store.lease_holder(lease).await.ok().flatten()
}

/// Starts competing for the lease `lease` (see [`site_lease`]) as `instance`; another instance
/// takes over within `bound` after this one dies.
pub fn spawn_leader(
    store: Arc<dyn Store>,
    lease: impl Into<String>,
    instance: impl Into<String>,
    bound: Duration,
) -> Leadership {
    let (lease_name, instance) = (lease.into(), instance.into());
    let (tx, rx) = watch::channel(false);
    let (holder_tx, holder) = watch::channel(None);
    let cancel = CancellationToken::new();
    let (lease, every) = lease_timing(bound);
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        loop {
            let leading = match store.try_lead(&lease_name, &instance, lease).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(instance = %instance, lease = %lease_name, error = %e, "leader_lease_failed");
                    false
                }
            };
            let now_held = holder_after(store.as_ref(), &lease_name, &instance, leading).await;
            holder_tx.send_if_modified(|h| {
                let changed = *h != now_held;
                *h = now_held;
                changed
            });
            let was = *tx.borrow();
            if was != leading {
                tracing::info!(instance = %instance, lease = %lease_name, leading, "leadership_changed");
                tx.send_replace(leading);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        if *tx.borrow() {
            if let Err(e) = store.resign(&lease_name, &instance).await {
                tracing::warn!(instance = %instance, error = %e, "leader_resign_failed");
            }
            tracing::info!(instance = %instance, "leader_resigned");
        }
        tx.send_replace(false);
        holder_tx.send_replace(None);
    });
    Leadership {
        rx,
        holder,
        cancel,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_keeps_takeover_within_the_bound() {
        let bound = Duration::from_secs(30);
        let (lease, every) = lease_timing(bound);
        // Worst case: the leader dies right after renewing; the lease runs out after `lease`,
        // and a follower notices at its next attempt, at most `every` later.
        assert!(lease + every <= bound);
        assert!(every * 2 < lease, "a leader survives one lost renewal");
    }

    #[test]
    fn the_lease_is_named_after_the_site() {
        assert_eq!(site_lease("home-a"), "site:home-a");
        assert_ne!(site_lease("home-a"), site_lease("home-b"));
    }
}
