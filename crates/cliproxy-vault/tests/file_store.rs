//! The file store against a real directory: modes, atomic writes, hostile files.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use cliproxy_core::Secret;
use cliproxy_vault::{
    Config, Credential, CredentialSecret, CredentialStore, FileStore, ListEntry, Notice, Unreadable,
};

const PLANTED: &str = "sk-planted-vault-token-5e0c11d4";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn credential(id: &str) -> Credential {
    Credential::new_api_key("openai", Secret::from(PLANTED.to_owned()))
        .unwrap()
        .with_id(id)
        .unwrap()
}

fn token(credential: &Credential) -> &str {
    let CredentialSecret::ApiKey(token) = &credential.secret else { unreachable!() };
    token.expose()
}

#[test]
fn creates_the_directory_0700_and_files_0600() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested/auths");
    let store = Config { dir: dir.clone(), ..Config::default() }.build().unwrap();
    assert_eq!(mode(&dir), 0o700);
    store.put(&credential("openai-a")).unwrap();
    assert_eq!(mode(&dir.join("openai-a.json")), 0o600);
    assert!(store.take_notices().is_empty());
    let mut names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    // The write took the lock of `auth.dir`; its (empty) file stays, 0600 like the rest.
    assert_eq!(names, [".lock", "openai-a.json"], "no temporary file left behind");
    assert_eq!(mode(&dir.join(".lock")), 0o600);
}

#[test]
fn put_get_list_delete_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let store = FileStore::open(root.path()).unwrap();
    assert!(store.list().unwrap().is_empty());
    let mut b = credential("openai-b");
    b.label = Some("second".to_owned());
    store.put(&b).unwrap();
    store.put(&credential("openai-a")).unwrap();

    let listed = store.list().unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["openai-a", "openai-b"]);
    assert_eq!(listed[1].label.as_deref(), Some("second"));
    assert_eq!(listed[1].kind, "api_key");
    assert_eq!(listed[1].path, root.path().join("openai-b.json"));
    assert!(!format!("{listed:?}").contains(PLANTED));

    let loaded = store.get("openai-b").unwrap().unwrap();
    assert_eq!(token(&loaded), PLANTED);
    assert_eq!(store.load_all().unwrap().len(), 2);

    // Replacing keeps one file; deleting removes it; deleting again says there was none.
    let mut replaced = credential("openai-b");
    replaced.secret = CredentialSecret::ApiKey(Secret::from("sk-rotated-000000".to_owned()));
    store.put(&replaced).unwrap();
    assert_eq!(token(&store.get("openai-b").unwrap().unwrap()), "sk-rotated-000000");
    assert!(store.delete("openai-b").unwrap());
    assert!(!store.delete("openai-b").unwrap());
    assert!(store.get("openai-b").unwrap().is_none());
    assert!(store.get("../etc/passwd").is_err());
    store.check().unwrap();
}

#[test]
fn loose_permissions_are_tightened_and_reported() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("auths");
    let store = FileStore::open(&dir).unwrap();
    store.put(&credential("openai-a")).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.join("openai-a.json"), fs::Permissions::from_mode(0o644)).unwrap();

    let store = FileStore::open(&dir).unwrap();
    assert_eq!(store.load_all().unwrap().len(), 1);
    let notices = store.take_notices();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices[0].to_string().contains("had mode 0755; changed to 0700"), "{notices:?}");
    assert!(
        notices[1].to_string().contains("openai-a.json: credential file had mode 0644"),
        "{notices:?}"
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("openai-a.json")), 0o600);
    assert!(store.take_notices().is_empty());
}

#[test]
fn hostile_directory_contents_are_refused_by_name() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("auths");
    let store = FileStore::open(&dir).unwrap();
    store.put(&credential("openai-a")).unwrap();

    // Hidden and non-JSON files (temporaries, editor backups) are not credentials.
    fs::write(dir.join(".openai-a.json.tmp-1234"), "garbage").unwrap();
    fs::write(dir.join("README"), "notes").unwrap();
    assert_eq!(store.load_all().unwrap().len(), 1);

    // A symlink pointing at a credential elsewhere is refused.
    let outside = root.path().join("outside.json");
    fs::write(&outside, fs::read(dir.join("openai-a.json")).unwrap()).unwrap();
    symlink(&outside, dir.join("linked.json")).unwrap();
    let error = store.load_all().unwrap_err().to_string();
    assert!(error.contains("linked.json") && error.contains("symbolic link"), "{error}");
    fs::remove_file(dir.join("linked.json")).unwrap();

    // A directory named like a credential.
    fs::create_dir(dir.join("sub.json")).unwrap();
    let error = store.load_all().unwrap_err().to_string();
    assert!(error.contains("sub.json") && error.contains("not a regular file"), "{error}");
    fs::remove_dir(dir.join("sub.json")).unwrap();

    // A truncated file is an error naming it; the token is not quoted; nothing is overwritten.
    let full = fs::read(dir.join("openai-a.json")).unwrap();
    fs::write(dir.join("openai-a.json"), &full[..full.len() / 2]).unwrap();
    let error = store.load_all().unwrap_err().to_string();
    assert!(error.contains("openai-a.json") && error.contains("unexpected end"), "{error}");
    assert!(!error.contains(PLANTED), "{error}");
    assert_eq!(fs::read(dir.join("openai-a.json")).unwrap(), &full[..full.len() / 2]);

    // A file that is too large is refused before it is read.
    fs::write(dir.join("openai-a.json"), vec![b' '; 1024 * 1024 + 1]).unwrap();
    let error = store.load_all().unwrap_err().to_string();
    assert!(error.contains("larger than"), "{error}");

    // A file whose name is not a valid id.
    fs::remove_file(dir.join("openai-a.json")).unwrap();
    fs::write(dir.join("bad name.json"), "{}").unwrap();
    let error = store.load_all().unwrap_err().to_string();
    assert!(
        error.contains("bad name.json") && error.contains("not a valid credential id"),
        "{error}"
    );
}

/// The same hostile contents do not stop `list_entries`: each is listed by the id in its
/// name with the class of its problem, the good credential beside them, and each can be
/// deleted by id without reading the others.
#[test]
fn hostile_directory_contents_are_listed_as_unreadable_and_can_be_deleted() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("auths");
    let store = FileStore::open(&dir).unwrap();
    store.put(&credential("openai-a")).unwrap();
    store.put(&credential("openai-b")).unwrap();
    let outside = root.path().join("outside.json");
    fs::write(&outside, fs::read(dir.join("openai-a.json")).unwrap()).unwrap();
    symlink(&outside, dir.join("linked.json")).unwrap();
    fs::create_dir(dir.join("sub.json")).unwrap();
    fs::write(dir.join("huge.json"), vec![b' '; 1024 * 1024 + 1]).unwrap();
    fs::write(dir.join("bad name.json"), "{}").unwrap();
    let full = fs::read(dir.join("openai-b.json")).unwrap();
    fs::write(dir.join("openai-b.json"), &full[..full.len() / 2]).unwrap();

    let listed: Vec<String> = store
        .list_entries()
        .unwrap()
        .iter()
        .map(|entry| match entry {
            ListEntry::Readable(meta) => format!("{} readable {}", meta.id, meta.provider),
            ListEntry::Unreadable(file) => format!("{} {}", file.id, file.reason.as_str()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        listed,
        [
            "bad name invalid_name",
            "huge too_large",
            "linked not_a_regular_file",
            "openai-a readable openai",
            "openai-b malformed",
            "sub not_a_regular_file",
        ]
    );
    // The reason sentences are fixed per class: none repeats anything of a file.
    for reason in [Unreadable::Malformed, Unreadable::TooLarge, Unreadable::ForeignOwner] {
        assert!(!reason.describe().contains(PLANTED) && !reason.describe().is_empty());
    }
    // ... and speak of the library, not of a program's settings or commands.
    for reason in [Unreadable::UnknownKey, Unreadable::PlaintextRefused, Unreadable::ForeignOwner] {
        let text = reason.describe();
        assert!(!text.contains("auth.") && !text.contains("cliproxy-server"), "{text}");
    }
    assert!(store.delete("openai-b").unwrap());
    assert!(store.delete("linked").unwrap());
    assert!(outside.exists(), "deleting the link leaves what it points at");
    assert_eq!(token(&store.get("openai-a").unwrap().unwrap()), PLANTED);
}

#[test]
fn auth_dir_that_is_a_file_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("auths");
    fs::write(&file, "").unwrap();
    let error = FileStore::open(&file).unwrap_err().to_string();
    assert!(error.contains("not a directory") && error.contains("auths"), "{error}");
}

#[test]
fn a_failed_write_leaves_the_old_credential_and_no_temporary_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("auths");
    let store = FileStore::open(&dir).unwrap();
    store.put(&credential("openai-a")).unwrap();
    // A directory in the way of the rename makes the write fail after the temporary file
    // was written.
    fs::create_dir(dir.join("openai-b.json")).unwrap();
    let error = store.put(&credential("openai-b")).unwrap_err().to_string();
    assert!(error.contains("openai-b.json") && error.contains("rename into place"), "{error}");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".lock", "openai-a.json", "openai-b.json"]);
    assert_eq!(token(&store.get("openai-a").unwrap().unwrap()), PLANTED);
}

#[test]
fn check_fails_when_the_directory_disappears() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("auths");
    let store = FileStore::open(&dir).unwrap();
    store.check().unwrap();
    fs::remove_dir(&dir).unwrap();
    let error = store.check().unwrap_err().to_string();
    assert!(error.contains("auths"), "{error}");
}

#[test]
fn last_use_is_recorded_in_batches_and_shown_by_list() {
    let root = tempfile::tempdir().unwrap();
    let store = FileStore::open(root.path()).unwrap();
    store.put(&credential("openai-a")).unwrap();
    store.put(&credential("openai-b")).unwrap();
    assert!(store.list().unwrap().iter().all(|m| m.last_used.is_none()));

    store.record_use(&[("openai-a".to_owned(), 1_800_000_000)]).unwrap();
    // An older time never moves it back; a deleted credential is forgotten.
    store.record_use(&[("openai-a".to_owned(), 1_700_000_000), ("gone".to_owned(), 5)]).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list[0].last_used, Some(1_800_000_000));
    assert_eq!(list[1].last_used, None);
    let text = fs::read_to_string(root.path().join(".last-used.json")).unwrap();
    assert!(!text.contains("gone") && !text.contains(PLANTED), "{text}");
    assert_eq!(mode(&root.path().join(".last-used.json")), 0o600);

    // A damaged file is reported and does not break the listing.
    fs::write(root.path().join(".last-used.json"), "garbage").unwrap();
    assert!(store.list().unwrap().iter().all(|m| m.last_used.is_none()));
    let notices = store.take_notices();
    assert!(
        notices.iter().any(|n| matches!(n, Notice::LastUsedUnreadable { error }
            if error.contains(".last-used.json"))),
        "{notices:?}"
    );
}

#[test]
fn the_device_fingerprint_is_persisted_and_checked() {
    let root = tempfile::tempdir().unwrap();
    let store = FileStore::open(root.path()).unwrap();
    let first = store.device_fingerprint().unwrap();
    assert_eq!(first.len(), 64);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    let file = root.path().join(".device-fingerprint");
    assert_eq!(mode(&file), 0o600);
    // Stable across restarts, even when the machine would now compute another one.
    fs::write(&file, format!("{}\n", "ab".repeat(32))).unwrap();
    let reopened = FileStore::open(root.path()).unwrap();
    assert_eq!(reopened.device_fingerprint().unwrap(), "ab".repeat(32));
    // Not a credential.
    assert!(reopened.list().unwrap().is_empty());
    // A damaged file is an error naming it, never silently replaced.
    fs::write(&file, "not a fingerprint").unwrap();
    let error = reopened.device_fingerprint().unwrap_err().to_string();
    assert!(error.contains(".device-fingerprint") && error.contains("delete it"), "{error}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a fingerprint");
    fs::remove_file(&file).unwrap();
    symlink("/etc/hostname", &file).unwrap();
    let error = reopened.device_fingerprint().unwrap_err().to_string();
    assert!(error.contains("symbolic link"), "{error}");
}

/// Issue 18 item 19: the fingerprint is a per-install random id, so two installs on one
/// machine differ (an unkeyed hash of MAC + hostname was the same for both, and could be
/// reversed by enumerating MACs and hostnames), and one install keeps its own across restarts.
#[test]
fn two_installs_on_one_machine_have_different_fingerprints() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = FileStore::open(one.path()).unwrap().device_fingerprint().unwrap();
    let second = FileStore::open(two.path()).unwrap().device_fingerprint().unwrap();
    assert_ne!(first, second, "two auth dirs on one machine share a fingerprint");
    assert_eq!(FileStore::open(one.path()).unwrap().device_fingerprint().unwrap(), first);
    assert_eq!(FileStore::open(two.path()).unwrap().device_fingerprint().unwrap(), second);
}

/// A write killed half-way leaves `.<name>.tmp-<hex>`, possibly holding a sealed copy of a
/// credential deleted since: opening the store removes it (and reports it), but leaves a
/// temporary file whose writer still holds its lock, and anything else hidden.
#[test]
fn temporary_files_of_interrupted_writes_are_removed_at_open() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("auths");
    let store = Config { dir: dir.clone(), ..Config::default() }.build().unwrap();
    store.put(&credential("openai-a")).unwrap();
    drop(store);
    let stale = dir.join(".openai-b.json.tmp-0123456789ab");
    fs::write(&stale, b"{\"half\": ").unwrap();
    let busy = dir.join(".openai-c.json.tmp-ba9876543210");
    let held = fs::File::create(&busy).unwrap();
    held.try_lock().unwrap();
    let other = dir.join(".something-else");
    fs::write(&other, b"kept").unwrap();

    let store = Config { dir: dir.clone(), ..Config::default() }.build().unwrap();
    assert!(!stale.exists(), "the stale temporary file is still there");
    assert!(busy.exists(), "a temporary file being written was removed");
    assert!(other.exists());
    let notices = store.take_notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].to_string().contains(".openai-b.json.tmp-0123456789ab"), "{notices:?}");
    assert_eq!(token(&store.get("openai-a").unwrap().unwrap()), PLANTED);
    drop(held);
}
