//! Encryption at rest against a real directory: no plaintext token on disk, wrong and missing
//! keys are errors naming the file, migration and rotation lose nothing.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs;
use std::path::Path;

use cliproxy_core::Secret;
use cliproxy_vault::{
    Config, Credential, CredentialSecret, CredentialStore, EncryptionConfig, Protection,
};

const KEY_A: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const KEY_B: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const TOKEN: &str = "sk-planted-encrypted-token-0b5e77";

fn config(dir: &Path, key: Option<&str>, previous: &[&str]) -> Config {
    Config {
        dir: dir.to_owned(),
        encryption: EncryptionConfig {
            enabled: key.is_some(),
            key: key.map(|k| Secret::from(k.to_owned())),
            previous_keys: previous.iter().map(|k| Secret::from((*k).to_owned())).collect(),
        },
        ..Config::default()
    }
}

fn credential(id: &str) -> Credential {
    let mut credential = Credential::new_api_key("openai", Secret::from(format!("{TOKEN}-{id}")))
        .unwrap()
        .with_id(id)
        .unwrap();
    credential.base_url = Some("https://api.openai.example".to_owned());
    credential
}

fn token(store: &dyn CredentialStore, id: &str) -> String {
    let credential = store.get(id).unwrap().unwrap();
    let CredentialSecret::ApiKey(token) = &credential.secret else { unreachable!() };
    token.expose().to_owned()
}

fn assert_no_plaintext(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(TOKEN) && !text.contains("api.openai.example"), "{text}");
    }
}

#[test]
fn encrypted_files_hold_no_plaintext_and_read_back() {
    let root = tempfile::tempdir().unwrap();
    let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
    store.put(&credential("openai-a")).unwrap();
    store.put(&credential("openai-b")).unwrap();
    assert_no_plaintext(root.path());
    assert_eq!(token(store.as_ref(), "openai-a"), format!("{TOKEN}-openai-a"));
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(matches!(&listed[0].stored, Protection::Encrypted(id) if id.len() == 16));
    assert_eq!(listed[0].base_url.as_deref(), Some("https://api.openai.example"));
    // Counted writes per key, in a hidden file that is not a credential.
    let usage = fs::read_to_string(root.path().join(".key-usage.json")).unwrap();
    assert!(usage.ends_with(":2}"), "{usage}");
}

#[test]
fn a_wrong_or_missing_key_is_an_error_naming_the_file_and_nothing_is_overwritten() {
    let root = tempfile::tempdir().unwrap();
    config(root.path(), Some(KEY_A), &[]).build().unwrap().put(&credential("openai-a")).unwrap();
    let before = fs::read(root.path().join("openai-a.json")).unwrap();

    let error = config(root.path(), Some(KEY_B), &[]).build().unwrap().load_all().unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("openai-a.json") && message.contains("neither auth.encryption.key"),
        "{message}"
    );

    let error = config(root.path(), None, &[]).build().unwrap().load_all().unwrap_err().to_string();
    assert!(
        error.contains("openai-a.json") && error.contains("auth.encryption is not set"),
        "{error}"
    );

    // A file changed on disk fails authentication.
    let mut value: serde_json::Value = serde_json::from_slice(&before).unwrap();
    let mut ciphertext = value["ciphertext"].as_str().unwrap().to_owned();
    ciphertext.replace_range(0..4, if ciphertext.starts_with("AAAA") { "BBBB" } else { "AAAA" });
    value["ciphertext"] = ciphertext.into();
    fs::write(root.path().join("openai-a.json"), value.to_string()).unwrap();
    let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
    let error = store.load_all().unwrap_err().to_string();
    assert!(error.contains("openai-a.json") && error.contains("cannot decrypt"), "{error}");
    // Migration refuses to run over it and leaves it alone.
    assert!(store.reencrypt().is_err());
    assert_eq!(fs::read(root.path().join("openai-a.json")).unwrap(), value.to_string().as_bytes());
}

#[test]
fn migrate_encrypts_plaintext_files_and_rotation_keeps_everything() {
    let root = tempfile::tempdir().unwrap();
    // Written before encryption was enabled.
    let plain = config(root.path(), None, &[]).build().unwrap();
    for id in ["openai-a", "openai-b", "openai-c"] {
        plain.put(&credential(id)).unwrap();
    }
    assert!(fs::read_to_string(root.path().join("openai-a.json")).unwrap().contains(TOKEN));

    // Enabled: plaintext still readable and reported; re-adding one encrypts it.
    let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
    assert_eq!(store.load_all().unwrap().len(), 3);
    let notices = store.take_notices();
    assert_eq!(notices.len(), 3, "{notices:?}");
    assert!(notices[0].contains("vault migrate"), "{notices:?}");
    store.put(&credential("openai-c")).unwrap();

    let report = store.reencrypt().unwrap();
    assert_eq!(report.from_plaintext, ["openai-a", "openai-b"]);
    assert_eq!(report.unchanged, 1);
    assert!(store.take_notices().is_empty());
    assert_no_plaintext(root.path());

    // Rotation: the new key current, the old one in previous_keys.
    let rotated = config(root.path(), Some(KEY_B), &[KEY_A]).build().unwrap();
    assert_eq!(token(rotated.as_ref(), "openai-b"), format!("{TOKEN}-openai-b"));
    let report = rotated.reencrypt().unwrap();
    assert_eq!(report.from_previous_key, ["openai-a", "openai-b", "openai-c"]);
    // Now the old key is no longer needed: every file decrypts with the new one alone.
    let only_new = config(root.path(), Some(KEY_B), &[]).build().unwrap();
    for id in ["openai-a", "openai-b", "openai-c"] {
        assert_eq!(token(only_new.as_ref(), id), format!("{TOKEN}-{id}"));
    }
    assert_no_plaintext(root.path());
}

#[test]
fn the_write_counter_warns_before_the_nonce_limit_and_stops_at_it() {
    let root = tempfile::tempdir().unwrap();
    let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
    store.put(&credential("openai-a")).unwrap();
    let usage = root.path().join(".key-usage.json");
    let key_id = fs::read_to_string(&usage).unwrap().split('"').nth(1).unwrap().to_owned();

    fs::write(&usage, format!("{{\"{key_id}\":{}}}", (1u64 << 30) - 1)).unwrap();
    store.put(&credential("openai-a")).unwrap();
    let notices = store.take_notices();
    assert!(notices.iter().any(|n| n.contains("rotate it")), "{notices:?}");

    fs::write(&usage, format!("{{\"{key_id}\":{}}}", 1u64 << 32)).unwrap();
    let error = store.put(&credential("openai-b")).unwrap_err().to_string();
    assert!(error.contains("safe limit") && error.contains("rotate-key"), "{error}");
    assert!(!root.path().join("openai-b.json").exists());
}

#[test]
fn key_configuration_errors_name_the_key_and_are_config_errors() {
    let root = tempfile::tempdir().unwrap();
    let cases = [
        (config(root.path(), Some("too-short"), &[]), "auth.encryption.key: not a 32-byte key"),
        (
            config(root.path(), Some(KEY_A), &["nope"]),
            "auth.encryption.previous_keys[0]: not a 32-byte key",
        ),
        (
            Config {
                encryption: EncryptionConfig { enabled: true, ..Default::default() },
                ..config(root.path(), None, &[])
            },
            "auth.encryption.key: encryption is enabled but no key is set",
        ),
    ];
    for (config, expected) in cases {
        let error = config.build().unwrap_err();
        assert!(error.is_config());
        let message = error.to_string();
        assert!(message.starts_with(expected), "{message}");
        assert!(!message.contains("too-short") && !message.contains("nope"), "{message}");
    }
    let error = config(root.path(), None, &[]).build().unwrap().reencrypt().unwrap_err();
    assert!(
        error.is_config() && error.to_string().contains("encryption is not enabled"),
        "{error}"
    );
}
