//! The model listings: `GET /v1/models` and `GET /v1/models/{id}` (and Gemini's
//! `models` under `/v1beta/` and `/v1/`), in the shape of the API the client speaks. A key is
//! shown only the models it may use; a provider's globs stand for the names its upstream
//! lists (`model_list.rs`, fetched and cached there).

use cliproxy_core::{ErrorCode, glob_match};
use cliproxy_netguard::Clock;
use cliproxy_vault::ClientIdentity;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::api::ApiFormat;
use crate::config::ProviderKind;
use crate::error::ApiError;
use crate::http_util::Body;
use crate::http_util::json_response;
use crate::mock;
use crate::model_list;
use crate::provider_set::ProviderSet;

/// `GET /v1/models` and `GET /v1beta/models` in `format`'s list shape.
pub(crate) async fn list(
    set: &ProviderSet,
    clock: &dyn Clock,
    client: &ClientIdentity,
    format: ApiFormat,
) -> Response<Body> {
    let models = listed_models(set, clock, client).await;
    let data: Vec<Value> =
        models.iter().map(|(id, owner)| model_object(id, owner, format)).collect();
    let body = match format {
        ApiFormat::Anthropic => json!({"data": data, "has_more": false,
            "first_id": models.first().map(|m| &m.0), "last_id": models.last().map(|m| &m.0)}),
        ApiFormat::Gemini => json!({"models": data}),
        ApiFormat::OpenAi => json!({"object": "list", "data": data}),
    };
    json_response(StatusCode::OK, &body)
}

/// `GET /v1/models/{id}` and `GET /v1beta/models/{id}`: a model the gateway serves and the
/// key may use, in `format`'s shape. Any other is not found, whether it exists or not, so
/// that a restricted key learns nothing about the models it may not use.
pub(crate) fn one(
    set: &ProviderSet,
    client: &ClientIdentity,
    id: &str,
    format: ApiFormat,
) -> Result<Response<Body>, ApiError> {
    match set.router.route(id).filter(|_| client.allows_model(id)) {
        Some((index, _)) => {
            let owner = set.providers[index].name.as_str();
            Ok(json_response(StatusCode::OK, &model_object(id, owner, format)))
        }
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("model `{id}` is not served to this key (see GET /v1/models)"),
        )),
    }
}

/// The models `client` may use, each with the name of the provider serving it, sorted.
/// Each name is listed under the provider it routes to, and only there.
async fn listed_models<'s>(
    set: &'s ProviderSet,
    clock: &dyn Clock,
    client: &ClientIdentity,
) -> Vec<(String, &'s str)> {
    let mut models: Vec<(String, &str)> = Vec::new();
    for (model, index) in set.router.models() {
        let provider = &set.providers[index];
        let names: Vec<String> = match (&provider.client, provider.kind) {
            // A mock provider's patterns stand for the names it serves.
            (_, ProviderKind::Mock) => mock::mock_model_names([model]),
            // A glob stands for the names in the upstream's own list (cached; fetched only
            // when a listing finds it stale).
            (Some(http), _) if model.contains('*') => {
                let upstream = model_list::Upstream {
                    name: &provider.name,
                    kind: provider.kind,
                    base_url: &provider.base_url,
                    client: http,
                    pool: &provider.pool,
                    vault: &set.vault,
                    limits: &set.limits,
                    fingerprint: set.fingerprint.as_ref(),
                    clock,
                    log: &set.log,
                };
                let listed = provider.listing.names(&upstream).await;
                listed.iter().filter(|name| glob_match(model, name)).cloned().collect()
            }
            _ => vec![model.to_owned()],
        };
        models.extend(
            names
                .into_iter()
                .filter(|name| set.router.route(name).map(|(i, _)| i) == Some(index))
                .filter(|name| client.allows_model(name))
                .map(|name| (name, provider.name.as_str())),
        );
    }
    // Two globs of one provider can both match a name.
    models.sort_unstable();
    models.dedup();
    models
}

/// One model in `format`'s shape. The gateway knows no creation dates, so the epoch stands in.
fn model_object(id: &str, owner: &str, format: ApiFormat) -> Value {
    match format {
        ApiFormat::OpenAi => json!({"id": id, "object": "model", "created": 0, "owned_by": owner}),
        ApiFormat::Anthropic => json!({"type": "model", "id": id, "display_name": id,
            "created_at": "1970-01-01T00:00:00Z"}),
        ApiFormat::Gemini => json!({"name": format!("models/{id}"), "displayName": id,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent",
                "countTokens", "embedContent", "batchEmbedContents"]}),
    }
}
