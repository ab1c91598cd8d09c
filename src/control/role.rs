//! The bridge's role in its site: the leader writes to the batteries, a standby (a second
//! bridge of the same site sharing the database, waiting for the leader's lease to run out)
//! keeps reading and publishing state but refuses every write (`CommandError::Standby`, naming
//! the leader). A bridge alone on its store (SQLite) is always the leader. The role is set by the
//! app's leadership loop; this module only holds it. Touches nothing else.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

/// The role as published in `bridge/info` and answered to a refused command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleState {
    /// True while this bridge leads its site (writes reach the batteries).
    pub leading: bool,
    /// The instance id holding the site's lease, when known (this one while leading).
    pub leader: Option<String>,
}

impl RoleState {
    /// `leader` or `standby`.
    pub fn name(&self) -> &'static str {
        if self.leading { "leader" } else { "standby" }
    }
}

/// The shared role (cheap to clone; every clone sees every change).
#[derive(Clone)]
pub struct Role {
    tx: Arc<watch::Sender<RoleState>>,
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Role").field(&*self.tx.borrow()).finish()
    }
}

impl Default for Role {
    /// The leader (a bridge alone on its store).
    fn default() -> Self {
        Self::new(true)
    }
}

impl Role {
    /// A role starting as leader (`leading`) or standby, leader unknown.
    pub fn new(leading: bool) -> Self {
        let state = RoleState {
            leading,
            leader: None,
        };
        Self {
            tx: Arc::new(watch::channel(state).0),
        }
    }

    /// The role now.
    pub fn get(&self) -> RoleState {
        self.tx.borrow().clone()
    }

    /// Changes the role; false when it was already that.
    pub fn set(&self, state: RoleState) -> bool {
        self.tx.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        })
    }

    /// The role and its changes.
    pub fn subscribe(&self) -> watch::Receiver<RoleState> {
        self.tx.subscribe()
    }

    /// The leader's instance id (or "unknown") when this bridge is a standby, else None.
    pub fn standby_of(&self) -> Option<String> {
        let s = self.tx.borrow();
        (!s.leading).then(|| s.leader.clone().unwrap_or_else(|| "unknown".into()))
    }
}

impl super::CommandService {
    /// Refuses every write while `role` says this bridge is a standby of its site.
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Leader or standby of the site.
    pub fn role(&self) -> &Role {
        &self.role
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_names_its_leader_and_a_leader_refuses_nothing() {
        let role = Role::new(false);
        assert_eq!(role.standby_of().as_deref(), Some("unknown"));
        assert!(role.set(RoleState {
            leading: false,
            leader: Some("edge-1".into()),
        }));
        assert_eq!(role.standby_of().as_deref(), Some("edge-1"));
        assert_eq!(role.get().name(), "standby");
        let leader = RoleState {
            leading: true,
            leader: Some("edge-2".into()),
        };
        assert!(role.set(leader.clone()));
        assert!(!role.set(leader), "no change, no notification");
        assert_eq!(role.standby_of(), None);
        assert_eq!(role.get().name(), "leader");
    }
}
