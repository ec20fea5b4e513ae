//! What the status page and the readiness check show of the network guard and the audit
//! layer.

use crate::guard::Guard;

impl Guard {
    /// What `GET /v0/management/status` shows of the guard: what is on, and the refusals
    /// counted since the start.
    pub(crate) fn status(&self) -> serde_json::Value {
        let rejections: serde_json::Map<String, serde_json::Value> = self
            .counters
            .snapshot()
            .into_iter()
            .map(|(name, count)| (name.to_owned(), count.into()))
            .collect();
        let limits = self.admission.status();
        serde_json::json!({
            "tls": self.tls.is_some(),
            "maintenance": self.maintenance.get(),
            "per_ip_rate_limit": limits.per_ip.map(|l| serde_json::json!({"tracked": l.tracked, "capacity": l.capacity})),
            "global_rate_limit": limits.global,
            "runtime_denylist_entries": self.ip.runtime_denylist().len(),
            "state": self.state.describe(),
            "shared_state": self.shared_state(),
            "instance_id": self.instance_id,
            "rejections": rejections,
        })
    }

    /// What `GET /v0/management/status` shows of the audit layer.
    pub(crate) fn audit_status(&self) -> serde_json::Value {
        serde_json::json!({
            "enabled": self.audit.enabled(),
            "healthy": self.audit.failing().is_none(),
            "error": self.audit_failing(),
        })
    }

    /// Why the audit log cannot be written, naming its setting (`None` when it is off or
    /// healthy): for the readiness check and the status page.
    pub(crate) fn audit_failing(&self) -> Option<String> {
        self.audit.failing().map(|f| crate::audit_anchor::failure_text(&f))
    }
}
