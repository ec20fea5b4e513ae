//! The management router: the table of every route ([`ROUTES`]) and the dispatch from it to
//! the handler of each. A route exists only in the table, and the authorisation matrix
//! (`bins/cliproxy-server/tests/management.rs`) walks it, so a new route cannot go untested.
//! The router sits between the call's course (`management.rs`), which calls it past the
//! gate, and the handlers (`credentials.rs`, `bans.rs`, `status.rs`, `guard_api.rs`), which
//! know nothing of paths or methods.

use bytes::Bytes;
use cliproxy_core::ErrorCode;
use http::{Method, Response};
use slog::Logger;

use super::body::read_body;
use super::gate::Management;
use super::{bans, credentials, status};
use crate::api::MANAGEMENT_PREFIX;
use crate::control::{ControlPlane, Note};
use crate::error::ApiError;
use crate::guard_api;
use crate::http_util::Body;

/// What a management route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    ListAuths,
    AddAuth,
    ExportAuths,
    DeleteProvider,
    DeleteCredential,
    ReadDenylist,
    Deny,
    Undeny,
    ReadBans,
    LiftBan,
    ReadMaintenance,
    SetMaintenance,
    Reload,
    Status,
}

/// One management route: a method and a path under `/v0/management`, in which `{name}`
/// matches one segment and `{name..}` one or more.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, ...
    pub method: &'static str,
    /// The path after `/v0/management`.
    pub path: &'static str,
    action: Action,
}

/// Every management route. The router dispatches from this table, so a route exists only
/// here; the authorisation tests walk it, so a new route cannot go untested.
pub const ROUTES: &[Route] = &[
    Route { method: "GET", path: "/auths", action: Action::ListAuths },
    Route { method: "POST", path: "/auths", action: Action::AddAuth },
    Route { method: "GET", path: "/auths/export", action: Action::ExportAuths },
    Route { method: "DELETE", path: "/auths/{provider}", action: Action::DeleteProvider },
    Route { method: "DELETE", path: "/auths/{provider}/{id}", action: Action::DeleteCredential },
    Route { method: "GET", path: "/security/ip-denylist", action: Action::ReadDenylist },
    Route { method: "POST", path: "/security/ip-denylist", action: Action::Deny },
    Route { method: "DELETE", path: "/security/ip-denylist/{network..}", action: Action::Undeny },
    Route { method: "GET", path: "/security/bans", action: Action::ReadBans },
    Route { method: "DELETE", path: "/security/bans/{ip}", action: Action::LiftBan },
    Route { method: "GET", path: "/maintenance", action: Action::ReadMaintenance },
    Route { method: "PUT", path: "/maintenance", action: Action::SetMaintenance },
    Route { method: "POST", path: "/config/reload", action: Action::Reload },
    Route { method: "GET", path: "/status", action: Action::Status },
];

impl Route {
    /// The captured segments when `segments` match this route's path (a `{name..}` capture
    /// is its segments joined by `/`).
    fn captures(&self, segments: &[&str]) -> Option<Vec<String>> {
        let pattern: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        let mut captures = Vec::new();
        for (i, part) in pattern.iter().enumerate() {
            if part.starts_with('{') && part.ends_with("..}") {
                let rest = segments.get(i..).filter(|rest| !rest.is_empty())?;
                captures.push(rest.join("/"));
                return Some(captures);
            }
            let segment = segments.get(i)?;
            if part.starts_with('{') {
                captures.push((*segment).to_owned());
            } else if part != segment {
                return None;
            }
        }
        (segments.len() == pattern.len()).then_some(captures)
    }
}

/// Runs the route that `method` and `path` name; 404 when no route has the path, 405 with
/// `Allow` when routes have it under other methods.
pub(super) async fn route<B>(
    plane: &impl ControlPlane,
    gate: &Management,
    method: &Method,
    path: &str,
    body: B,
    log: &Logger,
    note: &mut Note,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let rest = path.strip_prefix(MANAGEMENT_PREFIX).unwrap_or("");
    let segments: Vec<&str> = rest.strip_prefix('/').unwrap_or(rest).split('/').collect();
    let matching: Vec<(&Route, Vec<String>)> = ROUTES
        .iter()
        .filter_map(|route| route.captures(&segments).map(|captures| (route, captures)))
        .collect();
    let Some((route, captures)) =
        matching.iter().find(|(route, _)| route.method == method.as_str())
    else {
        if matching.is_empty() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no management route {method} {path}"),
            ));
        }
        let mut allow: Vec<&str> = matching.iter().map(|(route, _)| route.method).collect();
        allow.dedup();
        let allow = allow.join(", ");
        let mut error = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{path} does not accept {method}; use {allow}"),
        );
        error.allow = Some(allow.into());
        return Err(error);
    };
    let capture = |i: usize| captures.get(i).map(String::as_str).unwrap_or_default();
    let guard = plane.guard();
    match route.action {
        Action::ListAuths => credentials::list(plane).await,
        Action::AddAuth => credentials::add(plane, body, log, note).await,
        Action::ExportAuths => credentials::export(plane, log).await,
        Action::DeleteProvider => credentials::delete(plane, capture(0), None).await,
        Action::DeleteCredential => credentials::delete(plane, capture(0), Some(capture(1))).await,
        Action::ReadDenylist => Ok(guard_api::denylist(guard)),
        Action::Deny => guard_api::deny(guard, read_body(body).await?, log, note).await,
        Action::Undeny => guard_api::undeny(guard, capture(0), log, note).await,
        Action::ReadBans => Ok(bans::bans(gate)),
        Action::LiftBan => bans::lift(gate, guard, capture(0), log, note).await,
        Action::ReadMaintenance => Ok(guard_api::maintenance(guard)),
        Action::SetMaintenance => {
            guard_api::set_maintenance(guard, read_body(body).await?, log, note)
        }
        Action::Reload => plane.reload_config("management API", note).await,
        Action::Status => Ok(status::status(plane)),
    }
}
