//! Model routing: which provider serves a model name.

use cliproxy_core::glob_match;

use crate::config::{ConfigError, ProvidersConfig};

/// Maps model names to provider indices (positions in the providers' name order) and, for
/// an alias, to the name the provider knows the model by.
///
/// An exact name beats any glob; among globs the longest pattern (the most specific) wins, and
/// equal lengths go to the provider whose name sorts first, so routing never depends on hash
/// order.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelRouter {
    exact: std::collections::HashMap<String, Route>,
    globs: Vec<(String, usize)>,
}

impl ModelRouter {
    /// Builds the router; the same exact name listed by two providers is a config error.
    pub(crate) fn new(providers: &ProvidersConfig) -> Result<Self, ConfigError> {
        let mut router = Self::default();
        for (index, (name, provider)) in providers.0.iter().enumerate() {
            for entry in provider.effective_models() {
                let model = entry.name;
                if model.contains('*') {
                    router.globs.push((model, index));
                } else if let Some(other) = router.exact.get(&model) {
                    let other_name =
                        providers.0.keys().nth(other.provider).map_or("?", String::as_str);
                    return Err(ConfigError::new(format!(
                        "`providers.{name}.models`: model `{model}` is also listed by provider `{other_name}`; a model name routes to one provider"
                    )));
                } else {
                    router.exact.insert(model, Route { provider: index, upstream: entry.upstream });
                }
            }
        }
        // Longest pattern first; a stable sort keeps provider-name order among equals.
        router.globs.sort_by_key(|glob| std::cmp::Reverse(glob.0.len()));
        Ok(router)
    }

    /// The provider index serving `model`, and the provider's name for it when `model` is an
    /// alias.
    pub(crate) fn route(&self, model: &str) -> Option<(usize, Option<&str>)> {
        if let Some(route) = self.exact.get(model) {
            return Some((route.provider, route.upstream.as_deref()));
        }
        self.globs
            .iter()
            .find(|(pattern, _)| glob_match(pattern, model))
            .map(|&(_, index)| (index, None))
    }

    /// Every configured name and pattern with its provider index, sorted, for `GET /v1/models`.
    pub(crate) fn models(&self) -> Vec<(&str, usize)> {
        let mut all: Vec<(&str, usize)> = self
            .exact
            .iter()
            .map(|(name, route)| (name.as_str(), route.provider))
            .chain(self.globs.iter().map(|(pattern, index)| (pattern.as_str(), *index)))
            .collect();
        all.sort_unstable();
        all
    }
}

/// Where an exact name goes.
#[derive(Debug, Clone)]
struct Route {
    provider: usize,
    /// The provider's name for the model, when the name is an alias.
    upstream: Option<String>,
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Yaml};

    use super::*;
    use crate::config::GatewayConfig;

    fn providers(yaml: &str) -> ProvidersConfig {
        let config: GatewayConfig = Figment::from(Yaml::string(yaml)).extract().unwrap();
        config.providers
    }

    #[test]
    fn exact_beats_glob_and_longer_glob_beats_shorter() {
        let router = ModelRouter::new(&providers(
            "providers:\n  a: {type: openai, models: ['gpt-*']}\n  b: {type: openai, models: ['gpt-4o', 'gpt-4*']}\n  c: {type: mock}\n",
        ))
        .unwrap();
        assert_eq!(router.route("gpt-4o"), Some((1, None)));
        assert_eq!(router.route("gpt-4.1"), Some((1, None)), "gpt-4* is longer than gpt-*");
        assert_eq!(router.route("gpt-3.5"), Some((0, None)));
        assert_eq!(router.route("mock-1"), Some((2, None)));
        assert_eq!(router.route("claude-3"), None);
        assert_eq!(router.route(""), None);
        let listed: Vec<&str> = router.models().iter().map(|m| m.0).collect();
        assert_eq!(listed, ["gpt-*", "gpt-4*", "gpt-4o", "mock-*"]);
    }

    #[test]
    fn an_alias_routes_to_its_provider_under_the_upstream_name() {
        let router = ModelRouter::new(&providers(
            "providers:\n  a: {type: claude, models: [{name: sonnet, upstream: claude-sonnet-4-5}, 'claude-*']}\n  b: {type: openai, models: ['gpt-*', {name: fast, upstream: gpt-4o-mini}]}\n",
        ))
        .unwrap();
        assert_eq!(router.route("sonnet"), Some((0, Some("claude-sonnet-4-5"))));
        assert_eq!(router.route("fast"), Some((1, Some("gpt-4o-mini"))));
        assert_eq!(router.route("claude-opus-4"), Some((0, None)));
        // An alias and a plain name are one namespace: both are listed.
        let listed: Vec<&str> = router.models().iter().map(|m| m.0).collect();
        assert_eq!(listed, ["claude-*", "fast", "gpt-*", "sonnet"]);
    }

    #[test]
    fn alias_entries_are_checked() {
        for (yaml, expected) in [
            (
                "providers:\n  a: {type: claude, models: [{name: 'x*', upstream: y}]}\n",
                "alias `x*` holds a `*`",
            ),
            (
                "providers:\n  a: {type: claude, models: [{name: x, upstream: ''}]}\n",
                "empty model name",
            ),
            (
                "providers:\n  a: {type: claude, models: [m], api: chat}\n",
                "`providers.a.api` applies only",
            ),
        ] {
            let error = GatewayConfig::from_yaml(yaml).unwrap_err().to_string();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        // An unknown key in an alias names the key, not "no variant matched".
        let error = GatewayConfig::from_yaml(
            "providers:\n  a: {type: claude, models: [{name: x, upstrem: y}]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("upstrem"), "{error}");
    }

    #[test]
    fn duplicate_exact_names_are_refused() {
        let error = ModelRouter::new(&providers(
            "providers:\n  a: {type: openai, models: [m]}\n  b: {type: claude, models: [m]}\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("`providers.b.models`") && error.contains("`a`"), "{error}");
    }
}
