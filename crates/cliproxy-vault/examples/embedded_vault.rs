//! The credential vault embedded in a small program of its own, with no cliproxy config:
//! an encrypted store in a temporary directory, an API key and an OAuth credential put in and
//! listed (redacted), the data key rotated (the old key kept as a previous key while every
//! file is re-encrypted), the credentials read back under the new key alone, and a tampered
//! file refused.
//!
//! Run it with `cargo run -p cliproxy-vault --example embedded_vault`; it asserts what it shows
//! and exits 0.

use std::error::Error as StdError;
use std::path::Path;

use cliproxy_core::Secret;
use cliproxy_vault::{
    Credential, CredentialSecret, CredentialStore, Error, FileStore, FileStoreOptions, Keyring,
    OAuthTokens, Protection,
};
use ring::rand::{SecureRandom, SystemRandom};

const API_TOKEN: &str = "sk-example-api-key-5f0c1d";
const ACCESS_TOKEN: &str = "at-example-access-token-93ab";
const REFRESH_TOKEN: &str = "rt-example-refresh-token-41de";

fn main() -> Result<(), Box<dyn StdError>> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("credentials");
    let first_key = random_key()?;

    // A service's store: encrypted under one key, plaintext files refused, and the directory
    // locked for the store's life (this process keeps credentials and writes them back).
    let store = open(&dir, Keyring::from_secrets(Some(&first_key), &[])?)?;
    let mut api = Credential::new_api_key("openai", Secret::from(API_TOKEN.to_owned()))?
        .with_id("openai-main")?;
    api.base_url = Some("https://api.openai.example/v1".to_owned());
    store.put(&api)?;
    let tokens = OAuthTokens {
        access_token: Secret::from(ACCESS_TOKEN.to_owned()),
        refresh_token: Secret::from(REFRESH_TOKEN.to_owned()),
        expires_at: 4_102_444_800,
        token_url: "https://auth.example.com/oauth/token".to_owned(),
        client_id: "embedded-example".to_owned(),
    };
    store.put(&Credential::new_oauth("anthropic", tokens)?.with_id("anthropic-oauth")?)?;

    // Listing reads no secret: ids, kinds and how each file is sealed.
    let listed = store.list()?;
    println!("stored in {}:", store.location().display());
    for meta in &listed {
        let Protection::Encrypted(key_id) = &meta.stored else {
            return Err("a credential was stored in plaintext".into());
        };
        println!("  {:<16} {:<10} {:<8} key {key_id}", meta.id, meta.provider, meta.kind);
    }
    assert_eq!(listed.len(), 2);
    let shown = format!("{listed:?} {:?}", store.get("anthropic-oauth")?);
    assert_no_tokens("the listing and Debug output", shown.as_bytes());
    for id in ["openai-main", "anthropic-oauth"] {
        assert_no_tokens(id, &std::fs::read(dir.join(format!("{id}.json")))?);
    }

    // Rotation: a new current key, the old one kept as a previous key until every file has
    // been re-encrypted under the new one.
    drop(store);
    let second_key = random_key()?;
    let rotating =
        open(&dir, Keyring::from_secrets(Some(&second_key), std::slice::from_ref(&first_key))?)?;
    let report = rotating.reencrypt()?;
    println!(
        "rotated: {} credential(s) re-encrypted under the new key",
        report.from_previous_key.len()
    );
    assert_eq!(report.from_previous_key, ["anthropic-oauth", "openai-main"]);
    drop(rotating);

    // The new key alone now reads everything; the old key alone reads nothing.
    let store = open(&dir, Keyring::from_secrets(Some(&second_key), &[])?)?;
    assert_eq!(token(&store, "openai-main")?, API_TOKEN);
    assert_eq!(token(&store, "anthropic-oauth")?, ACCESS_TOKEN);
    let Some(CredentialSecret::OAuth(tokens)) = store.get("anthropic-oauth")?.map(|c| c.secret)
    else {
        return Err("the OAuth credential came back as another kind".into());
    };
    assert_eq!(tokens.refresh_token.expose(), REFRESH_TOKEN);
    println!("read back under the new key: openai-main, anthropic-oauth");
    drop(store);
    let old_only =
        FileStoreOptions::new().keys(Keyring::from_secrets(Some(&first_key), &[])?).open(&dir)?;
    assert!(matches!(old_only.get("openai-main"), Err(Error::UnknownKey { .. })));
    drop(old_only);

    // Tampering: each file is sealed with its credential id as associated data. Someone who
    // can write the directory but holds no key copies the API key's file over the OAuth
    // credential and edits the id inside it to match: the file no longer authenticates.
    let store = open(&dir, Keyring::from_secrets(Some(&second_key), &[])?)?;
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("openai-main.json"))?)?;
    forged["id"] = "anthropic-oauth".into();
    std::fs::write(dir.join("anthropic-oauth.json"), forged.to_string())?;
    let refused = store.get("anthropic-oauth");
    let Err(error @ Error::Decrypt { .. }) = refused else {
        return Err(format!("a forged file was not refused as undecryptable: {refused:?}").into());
    };
    println!("tampered file refused: {error}");
    // The untouched credential still reads.
    assert_eq!(token(&store, "openai-main")?, API_TOKEN);

    // What the store fixed or noticed on its own, for this program to log as it likes.
    for notice in store.take_notices() {
        println!("notice: {notice}");
    }
    println!("ok");
    Ok(())
}

/// A store in `dir` with `keys`: plaintext refused, the directory locked while it is open.
fn open(dir: &Path, keys: Keyring) -> Result<FileStore, Error> {
    FileStoreOptions::new().keys(keys).require_encrypted(true).exclusive(true).open(dir)
}

/// A random data key as 64 hex digits (`openssl rand -hex 32` prints the same form).
fn random_key() -> Result<Secret, Box<dyn StdError>> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| "the system random generator failed")?;
    Ok(Secret::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// The bearer token of credential `id`.
fn token(store: &dyn CredentialStore, id: &str) -> Result<String, Box<dyn StdError>> {
    let credential = store.get(id)?.ok_or_else(|| format!("{id} is missing"))?;
    Ok(credential.secret.bearer().expose().to_owned())
}

/// Fails when any of the tokens appears in `bytes`.
fn assert_no_tokens(what: &str, bytes: &[u8]) {
    for secret in [API_TOKEN, ACCESS_TOKEN, REFRESH_TOKEN] {
        let found = bytes.windows(secret.len()).any(|window| window == secret.as_bytes());
        assert!(!found, "{what} holds a token in clear");
    }
}
