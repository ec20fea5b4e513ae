//! How the vault's errors and notices read to an operator of this gateway.
//!
//! The vault is a library: its texts speak of "client key 1", "the current data key" and "the
//! credential directory". The operator wrote `auth.api_keys[1]`, `auth.encryption.key` and
//! `auth.dir`, and fixes things with `cliproxy-server` commands and the management API. This
//! module maps each typed variant back to those names and remedies, so that the operator reads
//! the same information as before the vault became embeddable. Variants that name no setting
//! keep the vault's own text.

use cliproxy_vault::{ClientKeyProblem, Error, KeyRole, Notice, Unreadable};

/// The config key of a data key of `auth.encryption`.
pub fn key_setting(role: KeyRole) -> String {
    match role {
        KeyRole::Current => "auth.encryption.key".to_owned(),
        KeyRole::Previous(index) => format!("auth.encryption.previous_keys[{index}]"),
        // The vault may name more kinds of key one day: its own text still says which.
        other => other.to_string(),
    }
}

/// An error of the credential vault as the operator of this gateway reads it: naming the
/// config key (`auth.*`) and the command or API call that fixes it. Never holds a secret:
/// it only rewords what the vault's error holds, which never does.
pub fn vault_error_message(error: &Error) -> String {
    match error {
        // The budget's own key is named in full: the amount is the one thing wrong.
        Error::ClientKey { index, problem: ClientKeyProblem::BadBudget { reason } } => {
            format!("auth.api_keys[{index}].budget.usd: {reason}")
        }
        Error::ClientKey { index, problem } => {
            format!("auth.api_keys[{index}]: {}", client_key_problem(problem))
        }
        Error::InvalidDataKey { key, chars } => format!(
            "{}: not a 32-byte key (the value is {chars} characters); accepted forms: base64 of 32 bytes (what `openssl rand -base64 32` or `cliproxy-server keygen` prints), 64 hex digits, or exactly 32 raw bytes",
            key_setting(*key)
        ),
        Error::NoCurrentKey => {
            "auth.encryption.key: encryption is enabled but no key is set (set CLIPROXY_ENCRYPTION_KEY; `cliproxy-server keygen` prints one)".to_owned()
        }
        Error::RequireEncryptedWithoutEncryption => {
            "auth.encryption.require_encrypted: is true while auth.encryption.enabled is false: new credentials would be written in plaintext and then refused; enable encryption or drop the setting".to_owned()
        }
        Error::EncryptionDisabled => {
            "auth.encryption: encryption is not enabled; set `enabled: true` and `key` (`cliproxy-server keygen` prints one)".to_owned()
        }
        Error::UnknownKey { path, key_id, known } => format!(
            "{}: encrypted with key {key_id}, which is neither auth.encryption.key nor one of auth.encryption.previous_keys (configured: {}); add the old key to previous_keys",
            path.display(),
            configured(known)
        ),
        Error::PlaintextRefused { path } => format!(
            "{}: plaintext credential file refused: auth.encryption.require_encrypted is on (the default when encryption is enabled), and anyone who can write auth.dir can plant such a file; if you wrote it, `cliproxy-server vault migrate` encrypts it, otherwise delete it",
            path.display()
        ),
        Error::KeyExhausted { key_id, writes } => format!(
            "encryption key {key_id} has been used for {writes} writes, the safe limit for random nonces; rotate it (new auth.encryption.key, old one in previous_keys, then `cliproxy-server vault rotate-key`)"
        ),
        Error::Locked { dir } => format!(
            "{dir}: auth.dir is in use by another process (a running gateway, `cliproxy-server serve`, or a vault command holds {dir}/.lock); nothing was changed. Stop the gateway first, or change credentials through the running gateway's management API (POST /v0/management/auths, DELETE /v0/management/auths/PROVIDER/ID)",
            dir = dir.display()
        ),
        Error::ModeNotKept { path, wanted, got } => format!(
            "{}: mode is still {got:04o} after setting it to {wanted:04o}: this filesystem ignores permissions (vfat, some network or FUSE mounts), so the credentials would be readable by others; put auth.dir on a filesystem that keeps modes",
            path.display()
        ),
        Error::ForeignOwner { path, owner, ours } => format!(
            "{} is owned by uid {owner}, not by the uid the gateway runs as ({ours}); refusing to use it (fix: chown it to uid {ours} or remove it)",
            path.display()
        ),
        // The vault names the directory by its role; the operator knows it as `auth.dir`.
        Error::Unusable { path, reason } => {
            let reason = reason.replace("the credential directory", "auth.dir");
            format!("{}: {reason}", path.display())
        }
        Error::Io { path, op, source } => {
            let op = op
                .replace("the lock file of the credential directory", "the lock file of auth.dir");
            let setting = if op.ends_with("the credential directory") { " (auth.dir)" } else { "" };
            format!("{}: cannot {op}{setting}: {source}", path.display())
        }
        // `auth.store: redis`: the server is `state.redis`'s.
        Error::Redis { .. } => format!(
            "auth.store: redis: {error} (the server of state.redis.url; check that it answers)"
        ),
        Error::RedisNeedsEncryption => format!(
            "auth.store: redis with auth.encryption off: {error} (set auth.encryption.enabled: true and auth.encryption.key; `cliproxy-server keygen` prints one)"
        ),
        Error::RedisNotGiven => format!(
            "auth.store: redis: {error} (set state.backend: redis and state.redis.url)"
        ),
        other => other.to_string(),
    }
}

/// The configured key ids of an unknown-key error, as the operator read them before.
fn configured(known: &[String]) -> String {
    if known.is_empty() { "none: auth.encryption is not set".to_owned() } else { known.join(", ") }
}

fn client_key_problem(problem: &ClientKeyProblem) -> String {
    match problem {
        ClientKeyProblem::TooShort { len, min } => format!(
            "the key is {len} bytes; client keys must be at least {min} bytes (`cliproxy-server keygen` prints a good one)"
        ),
        ClientKeyProblem::DuplicateKey { first } => {
            format!("the same key is already listed at auth.api_keys[{first}]")
        }
        ClientKeyProblem::DuplicateName { name, first } => {
            format!("the name `{name}` is already used by auth.api_keys[{first}]")
        }
        other => other.to_string(),
    }
}

/// A notice of the credential vault (something it fixed or noticed) as the operator of this
/// gateway reads it.
pub fn vault_notice_message(notice: &Notice) -> String {
    match notice {
        Notice::ReadOnlyUnlocked { dir } => format!(
            "{}: auth.dir is on a read-only filesystem and has no lock file, so it is not locked against a vault command run where it is writable",
            dir.display()
        ),
        Notice::PlaintextWhileEncrypting { path } => format!(
            "{}: plaintext credential while encryption is enabled; `cliproxy-server vault migrate` encrypts it",
            path.display()
        ),
        Notice::KeyNearLimit { key_id, writes, limit } => format!(
            "encryption key {key_id} has encrypted {writes} files; rotate it before {limit} (new auth.encryption.key, the old one in previous_keys, then `cliproxy-server vault rotate-key`)"
        ),
        other => other.to_string(),
    }
}

/// The fixed sentence for a class of unreadable credential file, with this gateway's fix.
pub fn unreadable_detail(reason: Unreadable) -> &'static str {
    match reason {
        Unreadable::UnknownKey => {
            "sealed with a key that is neither auth.encryption.key nor in previous_keys; add that key or delete the file"
        }
        Unreadable::PlaintextRefused => {
            "plaintext while auth.encryption.require_encrypted is on; `cliproxy-server vault migrate` if you wrote it, otherwise delete it"
        }
        Unreadable::ForeignOwner => {
            "owned by another user; chown it to the gateway's user or delete it"
        }
        other => other.describe(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use cliproxy_core::Secret;
    use cliproxy_vault::{ClientKeyConfig, ClientKeys, Config, EncryptionConfig};

    use super::*;

    #[test]
    fn redis_store_errors_name_the_keys_that_fix_them() {
        let text = vault_error_message(&Error::RedisNeedsEncryption);
        assert!(
            text.starts_with("auth.store: redis") && text.contains("auth.encryption.key"),
            "{text}"
        );
        let text = vault_error_message(&Error::RedisNotGiven);
        assert!(
            text.contains("state.backend: redis") && text.contains("state.redis.url"),
            "{text}"
        );
    }

    const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

    fn client_key(name: Option<&str>, key: &str) -> ClientKeyConfig {
        ClientKeyConfig {
            name: name.map(str::to_owned),
            key: Secret::from(key.to_owned()),
            models: Vec::new(),
            rate_limit: None,
            quota: None,
            budget: None,
        }
    }

    /// A key with a daily budget of `usd` as a config file writes it.
    fn budgeted(usd: &str) -> ClientKeyConfig {
        serde_json::from_value(serde_json::json!({
            "name": "b", "key": "cpk-budgeted-key-0123456789",
            "budget": {"usd": usd, "period": "daily"},
        }))
        .unwrap()
    }

    fn encrypted(dir: &Path, key: Option<&str>, previous: &[&str]) -> Config {
        Config {
            dir: dir.to_owned(),
            encryption: EncryptionConfig {
                enabled: true,
                key: key.map(|k| Secret::from(k.to_owned())),
                previous_keys: previous.iter().map(|k| Secret::from((*k).to_owned())).collect(),
                require_encrypted: None,
            },
            ..Config::default()
        }
    }

    /// Issue 20: the vault's client-key errors speak of "client key N"; the operator reads
    /// the config key `auth.api_keys[N]`, for the entry and for the earlier one it clashes
    /// with, and the `keygen` remedy.
    #[test]
    fn client_key_errors_name_the_config_key() {
        let cases = [
            (
                vec![
                    client_key(Some("a"), "cpk-aaaaaaaaaaaaaaaaaaaa"),
                    client_key(Some("a"), "cpk-bbbbbbbbbbbbbbbbbbbb"),
                ],
                "auth.api_keys[1]: the name `a` is already used by auth.api_keys[0]",
            ),
            (
                vec![
                    client_key(None, "cpk-aaaaaaaaaaaaaaaaaaaa"),
                    client_key(None, "cpk-aaaaaaaaaaaaaaaaaaaa"),
                ],
                "auth.api_keys[1]: the same key is already listed at auth.api_keys[0]",
            ),
            (
                vec![client_key(None, "cpk-short")],
                "auth.api_keys[0]: the key is 9 bytes; client keys must be at least 16 bytes (`cliproxy-server keygen` prints a good one)",
            ),
            (vec![client_key(None, "")], "auth.api_keys[0]: the key is empty"),
            (
                vec![client_key(Some(" "), "cpk-aaaaaaaaaaaaaaaaaaaa")],
                "auth.api_keys[0]: `name` is empty",
            ),
            (
                vec![client_key(Some("a"), "cpk-aaaaaaaaaaaaaaaaaaaa"), budgeted("-1")],
                "auth.api_keys[1].budget.usd: is negative",
            ),
            (vec![budgeted("0")], "auth.api_keys[0].budget.usd: is 0; a budget must be above $0"),
            (vec![budgeted("1e3")], "auth.api_keys[0].budget.usd: `1e3` is not a decimal"),
            (vec![budgeted("1000000.01")], "auth.api_keys[0].budget.usd: is above $1000000"),
        ];
        for (keys, expected) in cases {
            let error = ClientKeys::from_config(&keys).unwrap_err();
            let message = vault_error_message(&error);
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains("cpk-"), "{message}");
        }
    }

    /// The data-key errors name `auth.encryption.key` / `previous_keys[i]` and the setting that
    /// is wrong, never the value; each is still a configuration error (exit 78).
    #[test]
    fn encryption_errors_name_the_config_key() {
        let root = tempfile::tempdir().unwrap();
        let cases = [
            (
                encrypted(root.path(), Some("too-short"), &[]),
                "auth.encryption.key: not a 32-byte key (the value is 9 characters)",
            ),
            (
                encrypted(root.path(), Some(KEY), &["nope"]),
                "auth.encryption.previous_keys[0]: not a 32-byte key (the value is 4 characters)",
            ),
            (
                encrypted(root.path(), None, &[]),
                "auth.encryption.key: encryption is enabled but no key is set (set CLIPROXY_ENCRYPTION_KEY",
            ),
            (
                Config {
                    encryption: EncryptionConfig {
                        require_encrypted: Some(true),
                        ..Default::default()
                    },
                    ..encrypted(root.path(), None, &[])
                },
                "auth.encryption.require_encrypted: is true while auth.encryption.enabled is false",
            ),
        ];
        for (config, expected) in cases {
            let error = config.build().unwrap_err();
            assert!(error.is_config(), "{error:?}");
            let message = vault_error_message(&error);
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains("too-short") && !message.contains("nope"), "{message}");
        }
        let plain = Config { dir: root.path().to_owned(), ..Config::default() }.build().unwrap();
        let message = vault_error_message(&plain.reencrypt().unwrap_err());
        assert!(message.starts_with("auth.encryption: encryption is not enabled"), "{message}");
        assert!(message.contains("cliproxy-server keygen"), "{message}");
    }

    /// The file errors and the lock refusal carry the remedies the operator had before:
    /// the config keys, `vault migrate` / `rotate-key`, and the management API routes.
    #[test]
    fn file_errors_name_the_settings_and_the_commands() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("auths");
        let store = encrypted(&dir, Some(KEY), &[]).build_exclusive().unwrap();
        let credential = cliproxy_vault::Credential::new_api_key(
            "openai",
            Secret::from("sk-mapping-0123".to_owned()),
        )
        .unwrap()
        .with_id("openai-a")
        .unwrap();
        store.put(&credential).unwrap();

        let locked = encrypted(&dir, Some(KEY), &[]).build_exclusive().unwrap_err();
        let message = vault_error_message(&locked);
        let shown = dir.display().to_string();
        for needle in [
            shown.as_str(),
            "auth.dir is in use",
            "`cliproxy-server serve`",
            "Stop the gateway",
            "POST /v0/management/auths",
            "DELETE /v0/management/auths/PROVIDER/ID",
        ] {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
        assert!(message.contains(&format!("{shown}/.lock")), "{message}");
        drop(store);

        let unknown = Config { dir: dir.clone(), ..Config::default() }
            .build()
            .unwrap()
            .load_all()
            .unwrap_err();
        let message = vault_error_message(&unknown);
        assert!(
            message.contains("openai-a.json")
                && message.contains(
                    "neither auth.encryption.key nor one of auth.encryption.previous_keys"
                )
                && message.contains("(configured: none: auth.encryption is not set)"),
            "{message}"
        );
        let other = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let unknown = encrypted(&dir, Some(other), &[]).build().unwrap().load_all().unwrap_err();
        let message = vault_error_message(&unknown);
        assert!(
            message.contains("add the old key to previous_keys") && !message.contains("none:"),
            "{message}"
        );

        let planted = PathBuf::from("/x/oa-planted.json");
        let message = vault_error_message(&Error::PlaintextRefused { path: planted });
        assert!(
            message.contains("/x/oa-planted.json")
                && message.contains("auth.encryption.require_encrypted")
                && message.contains("`cliproxy-server vault migrate`"),
            "{message}"
        );
        let message = vault_error_message(&Error::KeyExhausted {
            key_id: "abcd".to_owned(),
            writes: 1 << 32,
        });
        assert!(
            message.contains("new auth.encryption.key")
                && message.contains("`cliproxy-server vault rotate-key`"),
            "{message}"
        );
        let message = vault_error_message(&Error::ModeNotKept {
            path: dir.clone(),
            wanted: 0o700,
            got: 0o755,
        });
        assert!(message.ends_with("put auth.dir on a filesystem that keeps modes"), "{message}");
    }

    /// The directory refusals keep naming `auth.dir`: a file in its place, and one it cannot
    /// be created under.
    #[test]
    fn directory_errors_name_auth_dir() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("auths");
        std::fs::write(&file, b"not a directory").unwrap();
        let error = Config { dir: file.clone(), ..Config::default() }.build().unwrap_err();
        let message = vault_error_message(&error);
        assert!(message.contains("auth.dir") && message.contains("not a directory"), "{message}");
        let error = Config { dir: file.join("below"), ..Config::default() }.build().unwrap_err();
        let message = vault_error_message(&error);
        assert!(message.contains("the credential directory (auth.dir)"), "{message}");
    }

    /// The notices that name a setting or a command get them back; the others are the vault's.
    #[test]
    fn notices_name_the_commands() {
        let path = PathBuf::from("/x/openai-a.json");
        let cases = [
            (
                Notice::PlaintextWhileEncrypting { path: path.clone() },
                "/x/openai-a.json: plaintext credential while encryption is enabled; `cliproxy-server vault migrate` encrypts it",
            ),
            (
                Notice::KeyNearLimit { key_id: "abcd".to_owned(), writes: 1 << 30, limit: 1 << 32 },
                "encryption key abcd has encrypted 1073741824 files; rotate it before 4294967296 (new auth.encryption.key, the old one in previous_keys, then `cliproxy-server vault rotate-key`)",
            ),
            (
                Notice::ReadOnlyUnlocked { dir: PathBuf::from("/x") },
                "/x: auth.dir is on a read-only filesystem and has no lock file, so it is not locked against a vault command run where it is writable",
            ),
            (
                Notice::FileModeTightened { path, was: 0o644 },
                "/x/openai-a.json: credential file had mode 0644; changed to 0600",
            ),
        ];
        for (notice, expected) in cases {
            assert_eq!(vault_notice_message(&notice), expected);
        }
    }

    #[test]
    fn unreadable_details_name_the_settings() {
        assert!(unreadable_detail(Unreadable::UnknownKey).contains("auth.encryption.key"));
        assert!(
            unreadable_detail(Unreadable::PlaintextRefused)
                .contains("cliproxy-server vault migrate")
        );
        assert_eq!(unreadable_detail(Unreadable::TooLarge), Unreadable::TooLarge.describe());
    }
}
