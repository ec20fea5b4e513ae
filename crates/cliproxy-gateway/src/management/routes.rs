//! The management router: the table of every route ([`ROUTES`]) and the dispatch from it to
//! the handler of each. A route exists only in the table, and the authorisation matrix
//! (`bins/cliproxy-server/tests/management.rs`) walks it, so a new route cannot go untested.
//! The router sits between the call's course (`management.rs`), which calls it past the
//! gate, and the handlers (`credentials.rs`, `bans.rs`, `status.rs`, `usage.rs`,
//! gate, and the handlers (`credentials.rs`, `bans.rs`, `status.rs`, `client_keys.rs`,
//! `guard_api.rs`), which know nothing of paths or methods.

use std::sync::LazyLock;

use bytes::Bytes;
use cliproxy_core::ErrorCode;
use http::{Method, Response};
use slog::Logger;

use super::body::read_body;
use super::gate::Management;
use super::{bans, client_keys, credentials, status, usage};
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
    Usage,
    ListClientKeys,
    CreateClientKey,
    ReadClientKey,
    ChangeClientKey,
    RevokeClientKey,
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
    Route { method: "GET", path: "/usage", action: Action::Usage },
    Route { method: "GET", path: "/client-keys", action: Action::ListClientKeys },
    Route { method: "POST", path: "/client-keys", action: Action::CreateClientKey },
    Route { method: "GET", path: "/client-keys/{name}", action: Action::ReadClientKey },
    Route { method: "PATCH", path: "/client-keys/{name}", action: Action::ChangeClientKey },
    Route { method: "DELETE", path: "/client-keys/{name}", action: Action::RevokeClientKey },
];

impl Route {
    /// The path in `matchit`'s syntax: the table's `{name..}` is its catch-all `{*name}`. The
    /// table keeps its own spelling because it is public: the authorisation tests and the
    /// docs name routes by it.
    fn tree_path(&self) -> String {
        match self.path.strip_suffix("..}").and_then(|head| head.rsplit_once('{')) {
            Some((before, name)) => format!("{before}{{*{name}}}"),
            None => self.path.to_owned(),
        }
    }
}

/// The table as `matchit` trees: one per method, in the order the methods first appear in
/// [`ROUTES`] (the order `Allow` lists them in). One tree per method, not one of every path:
/// `matchit` prefers a static segment to a parameter, so in a single tree `GET /auths/export`
/// would hide `DELETE /auths/{provider}` from `DELETE /auths/export`, which the table gives
/// to the provider named `export`.
struct Router(Vec<(&'static str, matchit::Router<&'static Route>)>);

impl Router {
    fn new() -> Result<Self, matchit::InsertError> {
        let mut trees: Vec<(&'static str, matchit::Router<&'static Route>)> = Vec::new();
        for route in ROUTES {
            if !trees.iter().any(|(method, _)| *method == route.method) {
                trees.push((route.method, matchit::Router::new()));
            }
            if let Some((_, tree)) = trees.iter_mut().find(|(method, _)| *method == route.method) {
                tree.insert(route.tree_path(), route)?;
            }
        }
        Ok(Self(trees))
    }
}

/// Built at the first management call. The table is a constant and a test builds it, so the
/// error is never met; it is answered as a 500 rather than a panic all the same.
static ROUTER: LazyLock<Result<Router, matchit::InsertError>> = LazyLock::new(Router::new);

/// What stands for an empty segment (`/auths/`, `/auths//x`) in the path given to the trees:
/// `matchit` never matches an empty parameter, while a route takes one and its handler
/// refuses the empty name (`DELETE /auths//x` is a 400 naming the provider name, `GET
/// /auths/` a 405 with `Allow: DELETE`). No request path holds a NUL (`http::Uri` refuses
/// control bytes), so the stand-in cannot be mistaken for a segment sent.
const EMPTY_SEGMENT: &str = "\0";

/// The route that `method` and `path` (the whole path, prefix included) name, with its
/// captures in the order of the route's path (a `{name..}` capture is its segments joined by
/// `/`); 404 when no route has the path, 405 with `Allow` when routes have it under other
/// methods.
fn find(method: &str, path: &str) -> Result<(&'static Route, Vec<String>), ApiError> {
    let router = ROUTER.as_ref().map_err(|_| {
        ApiError::new(ErrorCode::Internal, "the management route table does not build")
    })?;
    let rest = path.strip_prefix(MANAGEMENT_PREFIX).unwrap_or("");
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest
        .split('/')
        .map(|segment| if segment.is_empty() { EMPTY_SEGMENT } else { segment })
        .collect();
    let key = format!("/{}", segments.join("/"));
    let found =
        router.0.iter().find(|(name, _)| *name == method).and_then(|(_, tree)| tree.at(&key).ok());
    let Some(found) = found else {
        let allow: Vec<&str> = router
            .0
            .iter()
            .filter(|(_, tree)| tree.at(&key).is_ok())
            .map(|(name, _)| *name)
            .collect();
        if allow.is_empty() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no management route {method} {path}"),
            ));
        }
        let allow = allow.join(", ");
        let mut error = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{path} does not accept {method}; use {allow}"),
        );
        error.allow = Some(allow.into());
        return Err(error);
    };
    let captures = found.params.iter().map(|(_, value)| value.replace(EMPTY_SEGMENT, "")).collect();
    Ok((*found.value, captures))
}

/// Runs the route that `method` and `uri`'s path name; 404 when no route has the path, 405
/// with `Allow` when routes have it under other methods. The query string is for the routes
/// that read one (`/usage`).
pub(super) async fn route<B>(
    plane: &impl ControlPlane,
    gate: &Management,
    method: &Method,
    uri: &http::Uri,
    body: B,
    log: &Logger,
    note: &mut Note,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (route, captures) = find(method.as_str(), uri.path())?;
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
        Action::Usage => usage::usage(guard, uri.query()).await,
        Action::ListClientKeys => client_keys::list(plane).await,
        Action::CreateClientKey => client_keys::create(plane, body, log, note).await,
        Action::ReadClientKey => client_keys::get(plane, capture(0)).await,
        Action::ChangeClientKey => client_keys::patch(plane, capture(0), body, log, note).await,
        Action::RevokeClientKey => client_keys::delete(plane, capture(0), log, note).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The action and captures `method path` is routed to, or the refusal's code and `Allow`.
    fn routed(method: &str, path: &str) -> Result<(Action, Vec<String>), (ErrorCode, String)> {
        let path = format!("{MANAGEMENT_PREFIX}{path}");
        find(method, &path).map(|(route, captures)| (route.action, captures)).map_err(|error| {
            (error.code, error.allow.map(|allow| allow.to_string()).unwrap_or_default())
        })
    }

    fn captured(
        action: Action,
        captures: &[&str],
    ) -> Result<(Action, Vec<String>), (ErrorCode, String)> {
        Ok((action, captures.iter().map(|c| (*c).to_owned()).collect()))
    }

    #[test]
    fn every_route_of_the_table_is_found_by_its_own_path() {
        assert!(ROUTER.is_ok(), "the table does not build: {:?}", ROUTER.as_ref().err());
        for route in ROUTES {
            // Each parameter filled with a value of its own, so captures can be told apart.
            let mut path = route.path.to_owned();
            let mut expected = Vec::new();
            while let Some(open) = path.find('{') {
                let close = path[open..].find('}').map(|at| open + at).unwrap_or(path.len() - 1);
                let value = if path[open..close].ends_with("..") {
                    format!("v{}/more", expected.len())
                } else {
                    format!("v{}", expected.len())
                };
                path.replace_range(open..=close, &value);
                expected.push(value);
            }
            let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
            assert_eq!(routed(route.method, &path), captured(route.action, &expected), "{route:?}");
        }
    }

    #[test]
    fn a_static_path_of_one_method_does_not_hide_a_parameter_of_another() {
        assert_eq!(routed("GET", "/auths/export"), captured(Action::ExportAuths, &[]));
        assert_eq!(
            routed("DELETE", "/auths/export"),
            captured(Action::DeleteProvider, &["export"])
        );
        assert_eq!(
            routed("POST", "/auths/export"),
            Err((ErrorCode::MethodNotAllowed, "GET, DELETE".to_owned()))
        );
        assert_eq!(
            routed("PUT", "/auths"),
            Err((ErrorCode::MethodNotAllowed, "GET, POST".to_owned()))
        );
        assert_eq!(
            routed("PATCH", "/maintenance"),
            Err((ErrorCode::MethodNotAllowed, "GET, PUT".to_owned()))
        );
    }

    /// An empty segment is a parameter like any other, for its handler to refuse.
    #[test]
    fn empty_segments_reach_the_route_that_takes_them() {
        assert_eq!(routed("DELETE", "/auths/"), captured(Action::DeleteProvider, &[""]));
        assert_eq!(
            routed("GET", "/auths/"),
            Err((ErrorCode::MethodNotAllowed, "DELETE".to_owned()))
        );
        assert_eq!(routed("DELETE", "/auths//x"), captured(Action::DeleteCredential, &["", "x"]));
        assert_eq!(routed("DELETE", "/auths/x/"), captured(Action::DeleteCredential, &["x", ""]));
        assert_eq!(routed("DELETE", "/security/bans/"), captured(Action::LiftBan, &[""]));
        assert_eq!(routed("DELETE", "/security/ip-denylist/"), captured(Action::Undeny, &[""]));
        assert_eq!(
            routed("DELETE", "/security/ip-denylist/10.0.0.0//8"),
            captured(Action::Undeny, &["10.0.0.0//8"])
        );
        assert_eq!(
            routed("DELETE", "/security/ip-denylist/2001:db8::%2F32"),
            captured(Action::Undeny, &["2001:db8::%2F32"])
        );
        // The stand-in for an empty segment cannot arrive in a request.
        assert!(EMPTY_SEGMENT.parse::<http::Uri>().is_err());
        assert!(format!("/v0/management/auths/a{EMPTY_SEGMENT}b").parse::<http::Uri>().is_err());
    }

    #[test]
    fn paths_without_a_route_are_not_found() {
        for path in ["", "/", "/nothing", "/auths/a/b/c", "//auths", "/status/", "/security"] {
            assert_eq!(
                routed("GET", path).map(|_| ()),
                Err((ErrorCode::NotFound, String::new())),
                "{path:?}"
            );
        }
    }
}
