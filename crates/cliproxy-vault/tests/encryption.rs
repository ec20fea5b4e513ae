//! Encryption at rest against a real directory: no plaintext token on disk, wrong and missing
//! keys are errors naming the file, migration and rotation lose nothing.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs;
use std::path::Path;

use cliproxy_core::Secret;
use cliproxy_vault::{
    Config, Credential, CredentialSecret, CredentialStore, EncryptionConfig, Error, KeyRole,
    ListEntry, Notice, Protection, Unreadable,
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
            require_encrypted: None,
        },
        ..Config::default()
    }
}

/// [`config`] with `require_encrypted: false`: plaintext files load.
fn lenient(dir: &Path, key: &str) -> Config {
    let mut config = config(dir, Some(key), &[]);
    config.encryption.require_encrypted = Some(false);
    config
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
    assert!(matches!(&error, Error::UnknownKey { known, .. } if known.len() == 1), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("openai-a.json")
            && message.contains("neither the current key nor a previous key"),
        "{message}"
    );
    assert_library_terms(&message);

    let error = config(root.path(), None, &[]).build().unwrap().load_all().unwrap_err();
    assert!(matches!(&error, Error::UnknownKey { known, .. } if known.is_empty()), "{error:?}");
    let error = error.to_string();
    assert!(error.contains("openai-a.json") && error.contains("(configured: none)"), "{error}");

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

    // Enabled with `require_encrypted: false`: plaintext still loads and is reported.
    let store = lenient(root.path(), KEY_A).build().unwrap();
    assert_eq!(store.load_all().unwrap().len(), 3);
    let notices = store.take_notices();
    assert_eq!(notices.len(), 3, "{notices:?}");
    assert!(matches!(notices[0], Notice::PlaintextWhileEncrypting { .. }), "{notices:?}");
    assert!(notices[0].to_string().contains("a migration encrypts it"), "{notices:?}");
    assert_library_terms(&notices[0].to_string());

    // Enabled as by default: re-adding one encrypts it; `migrate` takes in the others and
    // names each (where its token will go), so that a planted one can be noticed.
    let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
    store.put(&credential("openai-c")).unwrap();
    let report = store.migrate().unwrap();
    assert_eq!(report.from_plaintext, ["openai-a", "openai-b"]);
    assert_eq!(report.unchanged, 1);
    let notices = store.take_notices();
    assert_eq!(notices.len(), 2, "{notices:?}");
    let first = notices[0].to_string();
    assert!(
        first.contains("openai-a.json")
            && first.contains("taken in")
            && first.contains("https://api.openai.example"),
        "{notices:?}"
    );
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
    assert!(
        notices
            .iter()
            .any(|n| matches!(n, Notice::KeyNearLimit { writes, .. } if *writes == 1 << 30)
                && n.to_string().contains("rotate it")),
        "{notices:?}"
    );
    notices.iter().for_each(|n| assert_library_terms(&n.to_string()));

    fs::write(&usage, format!("{{\"{key_id}\":{}}}", 1u64 << 32)).unwrap();
    let error = store.put(&credential("openai-b")).unwrap_err();
    assert!(
        matches!(&error, Error::KeyExhausted { writes, .. } if *writes == 1 << 32),
        "{error:?}"
    );
    let error = error.to_string();
    assert!(error.contains("safe limit") && error.contains("rotate it"), "{error}");
    assert_library_terms(&error);
    assert!(!root.path().join("openai-b.json").exists());
}

#[test]
fn key_configuration_errors_name_the_key_and_are_config_errors() {
    let root = tempfile::tempdir().unwrap();
    let cases = [
        (
            config(root.path(), Some("too-short"), &[]),
            "the current data key is not a 32-byte key (the value is 9 characters)",
        ),
        (
            config(root.path(), Some(KEY_A), &["nope"]),
            "the previous data key 0 is not a 32-byte key (the value is 4 characters)",
        ),
        (
            Config {
                encryption: EncryptionConfig { enabled: true, ..Default::default() },
                ..config(root.path(), None, &[])
            },
            "encryption is enabled but no current data key is set",
        ),
    ];
    for (config, expected) in cases {
        let error = config.build().unwrap_err();
        assert!(error.is_config());
        let message = error.to_string();
        assert!(message.starts_with(expected), "{message}");
        assert!(!message.contains("too-short") && !message.contains("nope"), "{message}");
        assert_library_terms(&message);
    }
    let error = config(root.path(), Some(KEY_A), &["nope"]).build().unwrap_err();
    assert!(
        matches!(error, Error::InvalidDataKey { key: KeyRole::Previous(0), chars: 4 }),
        "{error:?}"
    );
    let error = config(root.path(), None, &[]).build().unwrap().reencrypt().unwrap_err();
    assert!(matches!(error, Error::EncryptionDisabled), "{error:?}");
    assert!(
        error.is_config() && error.to_string().contains("encryption is not enabled"),
        "{error}"
    );
    assert_library_terms(&error.to_string());
}

/// The vault's texts are about the library: no setting name of a program that embeds it
/// (`auth.encryption.key`), none of its commands (`cliproxy-server vault migrate`).
#[track_caller]
fn assert_library_terms(text: &str) {
    for product in ["auth.", "cliproxy-server", "vault migrate", "rotate-key", "/v0/"] {
        assert!(!text.contains(product), "{product:?} in {text}");
    }
}

/// A credential file written once by this code (version 2, under `KEY_A`) and committed: the
/// on-disk format pinned byte for byte. If the format, the key derivation, the cipher, the
/// nonce or the associated data change, this file stops decrypting (or decrypts to other
/// bytes) and the tests below fail, instead of a round trip through the changed code passing.
const VECTOR_FILE: &str = r#"{
  "ciphertext": "sFFIbe/ykrPr6YqPvxiuH+Rkwisw1E/mUjjAQifUl09lywur0JhDKRU7vmSs2HonNVjPRQHiRyNnXx4JpJTmLC0jvvYKOAs54IV9omwwDbAS5D9qe3wwISTK5iYj9pECrMkmgU/qDq/nmxV4RdVMk3+vqaGtRaoGGSiqampaJ0YUKLM8FIH8DiuH4uLcIVQX6eNzg081wRgo8zR1/VJCpQEHMIFeDH/xNpS4VXX18WfzNsLfCfMnPF+SfAr6P1iXitrGEDxWV7cBPihmUYFpa8ovIksSS+fYFC1TGGTV2iwl3f92AkgKDRiUZsBCqaT60Q1iaQ0kyc88BrrAd2MIEm0eXx33mJaUkZi3xi9PzBBd8BAssWQ2uMmu0A==",
  "format": "cliproxy-credential",
  "id": "openai-vector",
  "key_id": "d539272df7015924",
  "nonce": "It4i0RPvXPp/LEtw",
  "version": 2
}
"#;
/// The id of `VECTOR_FILE` (its file name, and the associated data).
const VECTOR_ID: &str = "openai-vector";
/// The key id of `KEY_A`: 16 hex digits of SHA-256("cliproxy-key-id\0" ‖ key).
const KEY_A_ID: &str = "d539272df7015924";
/// What `VECTOR_FILE` decrypts to: the version 1 document, exactly.
const VECTOR_PLAINTEXT: &str = r#"{
  "format": "cliproxy-credential",
  "version": 1,
  "id": "openai-vector",
  "provider": "openai",
  "type": "api_key",
  "token": "sk-fixed-vector-token-5f1e",
  "base_url": "https://api.openai.example/v1",
  "label": "fixed vector",
  "created_at": 1764547200
}
"#;

/// The credential of `VECTOR_FILE`.
fn vector_credential() -> Credential {
    let mut credential =
        Credential::new_api_key("openai", Secret::from("sk-fixed-vector-token-5f1e".to_owned()))
            .unwrap()
            .with_id(VECTOR_ID)
            .unwrap();
    credential.base_url = Some("https://api.openai.example/v1".to_owned());
    credential.label = Some("fixed vector".to_owned());
    credential.created_at = 1_764_547_200;
    credential
}

/// Decrypts a version 2 file with ring directly (AES-256-GCM, the raw bytes of `KEY_A`, the
/// nonce field, the id as associated data), not with this crate's code: the reference the
/// crate's files are held to.
fn reference_open(file: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let value: serde_json::Value = serde_json::from_str(file).unwrap();
    let key = STANDARD.decode(KEY_A).unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
    let nonce: [u8; 12] =
        STANDARD.decode(value["nonce"].as_str().unwrap()).unwrap().try_into().unwrap();
    let mut buffer = STANDARD.decode(value["ciphertext"].as_str().unwrap()).unwrap();
    let id = value["id"].as_str().unwrap().to_owned();
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut buffer)
        .ok()?;
    Some(plain.to_vec())
}

fn write_vector(dir: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{VECTOR_ID}.json"));
    fs::write(&path, contents).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn the_committed_vector_decrypts_to_the_known_credential() {
    // The reference decryption gives the known document, byte for byte.
    let plain = reference_open(VECTOR_FILE).expect("the vector decrypts with ring directly");
    assert_eq!(String::from_utf8(plain).unwrap(), VECTOR_PLAINTEXT);

    // And the store reads it as the known credential.
    let root = tempfile::tempdir().unwrap();
    write_vector(root.path(), VECTOR_FILE);
    let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
    let loaded = store.get(VECTOR_ID).unwrap().unwrap();
    let expected = vector_credential();
    let CredentialSecret::ApiKey(token) = &loaded.secret else { unreachable!() };
    assert_eq!(token.expose(), "sk-fixed-vector-token-5f1e");
    assert_eq!(
        (&loaded.id, &loaded.provider, &loaded.base_url, &loaded.label, loaded.created_at),
        (
            &expected.id,
            &expected.provider,
            &expected.base_url,
            &expected.label,
            expected.created_at
        )
    );
    let listed = store.list().unwrap();
    assert!(matches!(&listed[0].stored, Protection::Encrypted(id) if id == KEY_A_ID));
}

#[test]
fn the_committed_vector_with_one_byte_changed_fails_authentication() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let value: serde_json::Value = serde_json::from_str(VECTOR_FILE).unwrap();
    let ciphertext = STANDARD.decode(value["ciphertext"].as_str().unwrap()).unwrap();
    let nonce = STANDARD.decode(value["nonce"].as_str().unwrap()).unwrap();
    // A flipped bit in the first byte of the ciphertext, in the last byte (the tag) and in the
    // nonce: each must be refused, by the reference and by the store.
    let mut first = ciphertext.clone();
    first[0] ^= 0x01;
    let mut tag = ciphertext.clone();
    *tag.last_mut().unwrap() ^= 0x80;
    let mut flipped_nonce = nonce.clone();
    flipped_nonce[5] ^= 0x10;
    let variants = [
        VECTOR_FILE.replace(value["ciphertext"].as_str().unwrap(), &STANDARD.encode(&first)),
        VECTOR_FILE.replace(value["ciphertext"].as_str().unwrap(), &STANDARD.encode(&tag)),
        VECTOR_FILE.replace(value["nonce"].as_str().unwrap(), &STANDARD.encode(&flipped_nonce)),
    ];
    for (index, variant) in variants.iter().enumerate() {
        assert_ne!(variant, VECTOR_FILE);
        assert!(reference_open(variant).is_none(), "variant {index} decrypts with ring");
        let root = tempfile::tempdir().unwrap();
        write_vector(root.path(), variant);
        let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
        let error = store.load_all().unwrap_err().to_string();
        assert!(
            error.contains("openai-vector.json") && error.contains("cannot decrypt"),
            "variant {index}: {error}"
        );
        assert!(!error.contains("sk-fixed-vector-token"), "{error}");
    }
}

#[test]
fn a_file_written_now_has_the_committed_layout_and_decrypts_with_the_reference() {
    // The nonce is fresh per write (no hook fixes it), so the new file is compared with the
    // vector everywhere but the nonce and the ciphertext, and its ciphertext is opened with
    // the reference: the same key id, fields, order, cipher and associated data.
    let root = tempfile::tempdir().unwrap();
    let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
    store.put(&vector_credential()).unwrap();
    let written = fs::read_to_string(root.path().join(format!("{VECTOR_ID}.json"))).unwrap();
    let blank = |file: &str| {
        let value: serde_json::Value = serde_json::from_str(file).unwrap();
        file.replace(value["nonce"].as_str().unwrap(), "NONCE")
            .replace(value["ciphertext"].as_str().unwrap(), "CIPHERTEXT")
    };
    assert_eq!(blank(&written), blank(VECTOR_FILE));
    let value: serde_json::Value = serde_json::from_str(&written).unwrap();
    let fresh: serde_json::Value = serde_json::from_str(VECTOR_FILE).unwrap();
    assert_ne!(value["nonce"], fresh["nonce"], "a fresh nonce per write");
    let plain = reference_open(&written).expect("the new file decrypts with ring directly");
    assert_eq!(String::from_utf8(plain).unwrap(), VECTOR_PLAINTEXT);
    // Ciphertext = plaintext + a 16-byte tag.
    use base64::Engine;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(value["ciphertext"].as_str().unwrap())
        .unwrap();
    assert_eq!(sealed.len(), VECTOR_PLAINTEXT.len() + 16);
}

/// A plaintext file planted in the directory by someone without the key, while encryption is
/// on: loading refuses it, naming the file and the requirement; so does a
/// key rotation, which rewrites nothing. Listing shows it as plaintext (the operator must
/// see it to judge it), and only `migrate` takes it in.
#[test]
fn a_planted_plaintext_file_is_refused_at_load_while_encryption_is_on() {
    let root = tempfile::tempdir().unwrap();
    let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
    store.put(&credential("openai-a")).unwrap();
    let genuine = fs::read(root.path().join("openai-a.json")).unwrap();
    config(root.path(), None, &[]).build().unwrap().put(&credential("openai-planted")).unwrap();
    let planted = fs::read(root.path().join("openai-planted.json")).unwrap();

    for error in [
        store.load_all().unwrap_err(),
        store.get("openai-planted").unwrap_err(),
        store.reencrypt().unwrap_err(),
    ] {
        let message = error.to_string();
        assert!(matches!(error, Error::PlaintextRefused { .. }), "{error:?}");
        assert!(
            message.contains("openai-planted.json")
                && message.contains("the store requires encrypted files")
                && message.contains("migrate it"),
            "{message}"
        );
        assert_library_terms(&message);
        assert!(!message.contains(TOKEN), "{message}");
    }
    // The genuine credential still reads on its own; nothing was rewritten.
    assert_eq!(token(store.as_ref(), "openai-a"), format!("{TOKEN}-openai-a"));
    assert_eq!(fs::read(root.path().join("openai-a.json")).unwrap(), genuine);
    assert_eq!(fs::read(root.path().join("openai-planted.json")).unwrap(), planted);

    let listed = store.list().unwrap();
    assert_eq!(listed[1].id, "openai-planted");
    assert_eq!(listed[1].stored, Protection::Plaintext);
    assert_eq!(listed[1].base_url.as_deref(), Some("https://api.openai.example"));

    let report = store.migrate().unwrap();
    assert_eq!(report.from_plaintext, ["openai-planted"]);
    assert_eq!(store.load_all().unwrap().len(), 2);
    assert_no_plaintext(root.path());

    // With `require_encrypted: false` the same file loads, as before the setting existed.
    let root = tempfile::tempdir().unwrap();
    config(root.path(), None, &[]).build().unwrap().put(&credential("openai-planted")).unwrap();
    assert_eq!(lenient(root.path(), KEY_A).build().unwrap().load_all().unwrap().len(), 1);
    // Without encryption there is nothing to require.
    assert_eq!(config(root.path(), None, &[]).build().unwrap().load_all().unwrap().len(), 1);
}

/// A damaged file and a file sealed under a key not configured: `load_all` still refuses
/// (the start must not silently lose a credential), but `list_entries` lists every file,
/// the unreadable ones by name and class only, and each file reads and deletes on its own.
#[test]
fn unreadable_files_are_listed_as_such_and_do_not_block_the_others() {
    let root = tempfile::tempdir().unwrap();
    let store = config(root.path(), Some(KEY_A), &[]).build().unwrap();
    for id in ["openai-a", "openai-damaged", "openai-leaked"] {
        store.put(&credential(id)).unwrap();
    }
    config(root.path(), Some(KEY_B), &[])
        .build()
        .unwrap()
        .put(&credential("openai-foreign"))
        .unwrap();
    let mut damaged = fs::read(root.path().join("openai-damaged.json")).unwrap();
    damaged.truncate(damaged.len() / 2);
    fs::write(root.path().join("openai-damaged.json"), &damaged).unwrap();

    assert!(store.load_all().is_err());
    assert!(store.list().is_err());
    let entries = store.list_entries().unwrap();
    let ids: Vec<&str> = entries.iter().map(ListEntry::id).collect();
    assert_eq!(ids, ["openai-a", "openai-damaged", "openai-foreign", "openai-leaked"]);
    let classes: Vec<Option<Unreadable>> = entries
        .iter()
        .map(|entry| match entry {
            ListEntry::Unreadable(file) => Some(file.reason),
            _ => None,
        })
        .collect();
    assert_eq!(classes, [None, Some(Unreadable::Malformed), Some(Unreadable::UnknownKey), None]);
    let ListEntry::Unreadable(foreign) = &entries[2] else { unreachable!() };
    assert_eq!(foreign.path, root.path().join("openai-foreign.json"));
    assert!(foreign.error.to_string().contains("openai-foreign.json"), "{:?}", foreign.error);
    assert_eq!(foreign.reason.as_str(), "unknown_key");
    assert!(!format!("{entries:?}").contains(TOKEN));

    // One file at a time: the leaked credential reads and goes; the unreadable ones are
    // reported as such; an absent id is `None`.
    assert!(
        matches!(store.entry("openai-leaked").unwrap(), Some(ListEntry::Readable(m)) if m.provider == "openai")
    );
    assert!(matches!(
        store.entry("openai-damaged").unwrap(),
        Some(ListEntry::Unreadable(file)) if file.reason == Unreadable::Malformed
    ));
    assert!(store.entry("openai-none").unwrap().is_none());
    assert!(store.entry("../x").is_err());
    assert!(store.delete("openai-leaked").unwrap());
    assert!(store.delete("openai-damaged").unwrap());
    // A file changed after it was written does not decrypt: its own class.
    let mut value: serde_json::Value =
        serde_json::from_slice(&fs::read(root.path().join("openai-a.json")).unwrap()).unwrap();
    let ciphertext = value["ciphertext"].as_str().unwrap().to_owned();
    let changed = if ciphertext.starts_with("AAAA") { "BBBB" } else { "AAAA" };
    value["ciphertext"] = format!("{changed}{}", &ciphertext[4..]).into();
    fs::write(root.path().join("openai-a.json"), value.to_string()).unwrap();
    let classes: Vec<String> = store
        .list_entries()
        .unwrap()
        .iter()
        .map(|entry| match entry {
            ListEntry::Unreadable(file) => format!("{} {}", file.id, file.reason.as_str()),
            other => other.id().to_owned(),
        })
        .collect();
    assert_eq!(classes, ["openai-a decrypt_failed", "openai-foreign unknown_key"]);
}
