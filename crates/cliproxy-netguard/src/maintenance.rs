//! Maintenance mode: while on, proxied requests are answered 503 with `Retry-After` and the
//! configured message; health and management stay up so that operators can turn it off.

use std::sync::RwLock;

use serde::Serialize;

/// Maintenance state, changed at run time through the management API.
#[derive(Debug)]
pub struct Maintenance {
    state: RwLock<MaintenanceState>,
}

/// What `GET /v0/management/maintenance` shows and `PUT` sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaintenanceState {
    /// Whether proxied requests are refused.
    pub enabled: bool,
    /// The text sent to clients.
    pub message: String,
}

impl Maintenance {
    /// Maintenance as `server.maintenance_mode` and `server.message` set it.
    pub fn new(enabled: bool, message: String) -> Self {
        Self { state: RwLock::new(MaintenanceState { enabled, message }) }
    }

    /// The current state.
    pub fn get(&self) -> MaintenanceState {
        match self.state.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The message when maintenance is on.
    pub fn active(&self) -> Option<String> {
        let state = self.get();
        state.enabled.then_some(state.message)
    }

    /// Turns maintenance on or off; a `None` message keeps the current one.
    pub fn set(&self, enabled: bool, message: Option<String>) -> MaintenanceState {
        let mut state = match self.state.write() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.enabled = enabled;
        if let Some(message) = message {
            state.message = message;
        }
        state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggles_and_keeps_the_message_unless_given() {
        let m = Maintenance::new(false, "later".to_owned());
        assert_eq!(m.active(), None);
        m.set(true, None);
        assert_eq!(m.active().as_deref(), Some("later"));
        m.set(true, Some("upgrading".to_owned()));
        assert_eq!(m.active().as_deref(), Some("upgrading"));
        assert!(!m.set(false, None).enabled);
    }
}
