//! Maintenance mode: while on, proxied requests are answered 503 with `Retry-After` and the
//! configured message; health and management stay up so that operators can turn it off.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

/// Maintenance state, changed at run time through the management API.
#[derive(Debug)]
pub struct Maintenance {
    /// Read without a lock by every request.
    state: ArcSwap<MaintenanceState>,
    /// Serialises `set`, a read-modify-write (a `None` message keeps the current one).
    writer: Mutex<()>,
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
        Self {
            state: ArcSwap::from_pointee(MaintenanceState { enabled, message }),
            writer: Mutex::new(()),
        }
    }

    /// The current state.
    pub fn get(&self) -> MaintenanceState {
        MaintenanceState::clone(&self.state.load())
    }

    /// The message when maintenance is on.
    pub fn active(&self) -> Option<String> {
        // Only the flag is read on the request path; the message is cloned when it is on.
        let state = self.state.load();
        state.enabled.then(|| state.message.clone())
    }

    /// Turns maintenance on or off; a `None` message keeps the current one.
    pub fn set(&self, enabled: bool, message: Option<String>) -> MaintenanceState {
        let _writer = match self.writer.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut state = self.get();
        state.enabled = enabled;
        if let Some(message) = message {
            state.message = message;
        }
        self.state.store(Arc::new(state.clone()));
        state
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
