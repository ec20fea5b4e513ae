//! Signed releases against the real tools: our signatures must verify with the stock
//! `minisign` (Debian's package; `.ci/integrity-tools.sh` installs it) and our `SHA256SUMS`
//! must be what `sha256sum` writes and checks. Every tampering (a byte of an artefact, of
//! `SHA256SUMS`, of the signature; a wrong key) must be caught by our verifier and, for what
//! minisign sees, by minisign.
#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cliproxy_integrity::release::{
    self, Error, PUBLIC_KEY_FILE, PublicKey, SECRET_KEY_FILE, SIGNATURE_FILE, SUMS_FILE, SecretKey,
    Signature,
};
use tempfile::TempDir;

const COMMENT: &str = "timestamp:1700000000\tfile:SHA256SUMS\tcliproxy:0.1.0";
const ARTEFACTS: &[(&str, &[u8])] = &[
    ("cliproxy-server-0.1.0-x86_64-unknown-linux-gnu", b"\x7fELF pretend binary\n"),
    ("cliproxy-server-0.1.0-aarch64-apple-darwin", b"\xcf\xfa\xed\xfe pretend\0binary"),
    ("cliproxy-server-0.1.0-x86_64-unknown-linux-musl", b""),
];

/// A signed release: the artefacts in `dir`, the key pair in `keys`.
struct Release {
    _tmp: TempDir,
    dir: PathBuf,
    keys: release::KeyPairFiles,
}

impl Release {
    fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("artifacts");
        fs::create_dir(&dir).unwrap();
        for (name, bytes) in ARTEFACTS {
            fs::write(dir.join(name), bytes).unwrap();
        }
        let keys = release::write_keypair(&tmp.path().join("keys")).unwrap();
        let key = release::read_secret_key(&keys.secret).unwrap();
        release::sign_dir(&dir, &key, COMMENT).unwrap();
        Self { _tmp: tmp, dir, keys }
    }

    fn sums(&self) -> PathBuf {
        self.dir.join(SUMS_FILE)
    }

    fn signature(&self) -> PathBuf {
        self.dir.join(SIGNATURE_FILE)
    }

    fn verify(&self) -> release::Result<release::VerifiedRelease> {
        release::verify_dir(&self.dir, &self.keys.public_key)
    }

    /// `minisign -V` on `SHA256SUMS` with the release's public key file.
    fn minisign_verify(&self, extra: &[&str]) -> Output {
        minisign_verify(&self.sums(), &self.signature(), &self.keys.public, extra)
    }
}

fn minisign_verify(message: &Path, signature: &Path, public_key: &Path, extra: &[&str]) -> Output {
    run(Command::new("minisign")
        .args(extra)
        .arg("-V")
        .arg("-m")
        .arg(message)
        .arg("-x")
        .arg(signature)
        .arg("-p")
        .arg(public_key))
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {:?} ({e}); install it: apt-get install -y minisign coreutils (.ci/integrity-tools.sh does)",
            command.get_program()
        )
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `bytes` with bit 0 of byte `index` flipped to `path`.
fn write_flipped(path: &Path, original: &[u8], index: usize) {
    let mut bytes = original.to_vec();
    bytes[index] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn keygen_writes_a_private_secret_key_and_a_minisign_public_key() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("new/keys");
    let files = release::write_keypair(&dir).unwrap();
    assert_eq!(files.secret, dir.join(SECRET_KEY_FILE));
    assert_eq!(files.public, dir.join(PUBLIC_KEY_FILE));
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&files.secret), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let public_text = fs::read_to_string(&files.public).unwrap();
    assert!(public_text.starts_with("untrusted comment: minisign public key "));
    assert_eq!(PublicKey::parse(&public_text).unwrap(), files.public_key);
    let key = release::read_secret_key(&files.secret).unwrap();
    assert_eq!(key.public_key(), &files.public_key);

    // A second key generation into the same directory refuses and changes nothing.
    let secret_before = fs::read(&files.secret).unwrap();
    let err = release::write_keypair(&dir).unwrap_err();
    assert!(matches!(err, Error::KeyExists { .. }), "{err}");
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(fs::read(&files.secret).unwrap(), secret_before);
    assert_eq!(fs::read_to_string(&files.public).unwrap(), public_text);
    // Also when only the public key is left over.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join(PUBLIC_KEY_FILE), "old").unwrap();
    assert!(matches!(release::write_keypair(&other), Err(Error::KeyExists { .. })));
    assert!(!other.join(SECRET_KEY_FILE).exists());
}

#[test]
fn a_secret_key_others_can_read_is_refused() {
    let tmp = TempDir::new().unwrap();
    let files = release::write_keypair(tmp.path()).unwrap();
    for mode in [0o640, 0o604, 0o644] {
        fs::set_permissions(&files.secret, fs::Permissions::from_mode(mode)).unwrap();
        let err = release::read_secret_key(&files.secret).unwrap_err();
        assert!(matches!(err, Error::KeyFileUnsafe { .. }), "{err}");
        assert!(err.to_string().contains(&format!("{mode:04o}")), "{err}");
    }
    fs::set_permissions(&files.secret, fs::Permissions::from_mode(0o400)).unwrap();
    release::read_secret_key(&files.secret).unwrap();
    // A symbolic link is not followed.
    let link = tmp.path().join("link.key");
    std::os::unix::fs::symlink(&files.secret, &link).unwrap();
    assert!(matches!(release::read_secret_key(&link), Err(Error::KeyFileUnsafe { .. })));
}

#[test]
fn round_trip_with_our_verifier() {
    let release = Release::new();
    let verified = release.verify().unwrap();
    assert_eq!(verified.key_id, release.keys.public_key.key_id());
    assert_eq!(verified.trusted_comment, COMMENT);
    let mut names: Vec<&str> = ARTEFACTS.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    assert_eq!(verified.files, names);
    assert!(verified.unlisted.is_empty());

    // A file nobody signed is reported, not silently accepted or fatal.
    fs::write(release.dir.join("extra"), "x").unwrap();
    assert_eq!(release.verify().unwrap().unlisted, ["extra"]);

    // Signing again (after the release gained a file) covers it.
    let key = release::read_secret_key(&release.keys.secret).unwrap();
    let signed = release::sign_dir(&release.dir, &key, COMMENT).unwrap();
    assert_eq!(signed.checksums.len(), ARTEFACTS.len() + 1);
    assert!(release.verify().unwrap().unlisted.is_empty());
    assert!(
        !fs::read_dir(&release.dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.'))
    );
}

#[test]
fn sha256sums_is_exactly_what_sha256sum_writes_and_checks() {
    let release = Release::new();
    let mut names: Vec<&str> = ARTEFACTS.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    let out = run(Command::new("sha256sum").arg("--").args(&names).current_dir(&release.dir));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read(release.sums()).unwrap(), out.stdout);

    let check = run(Command::new("sha256sum")
        .args(["-c", "--strict", SUMS_FILE])
        .current_dir(&release.dir));
    assert!(check.status.success(), "{}{}", text(&check.stdout), text(&check.stderr));
}

#[test]
fn minisign_verifies_our_signature() {
    let release = Release::new();
    let out = release.minisign_verify(&[]);
    assert!(
        out.status.success(),
        "minisign refused our signature:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Signature and comment signature verified"), "{stdout}");
    assert!(stdout.contains(&format!("Trusted comment: {COMMENT}")), "{stdout}");

    // `-Q` prints the trusted comment alone: what a script compares with the version.
    let quiet = release.minisign_verify(&["-Q"]);
    assert!(quiet.status.success());
    assert_eq!(text(&quiet.stdout), format!("{COMMENT}\n"));

    // minisign's `-H` demands a prehashed ("ED") signature; ours is the legacy "Ed" form
    // (ring has no BLAKE2b), which is why docs/security/releases.md says not to pass `-H`.
    let strict = release.minisign_verify(&["-H"]);
    assert!(!strict.status.success());
    assert!(text(&strict.stderr).contains("Legacy (non-prehashed) signature found"));
}

#[test]
fn a_flipped_byte_in_an_artefact_is_caught() {
    let release = Release::new();
    for (name, bytes) in ARTEFACTS.iter().filter(|(_, bytes)| !bytes.is_empty()) {
        let path = release.dir.join(name);
        for index in [0, bytes.len() / 2, bytes.len() - 1] {
            write_flipped(&path, bytes, index);
            let err = release.verify().unwrap_err();
            let Error::ChecksumMismatch { name: reported, expected, actual } = &err else {
                panic!("{name}[{index}]: {err}");
            };
            assert_eq!(reported, name);
            assert_eq!(expected.to_string(), release::Sha256::of_bytes(bytes).to_string());
            assert_ne!(expected, actual);
            let message = err.to_string();
            assert!(
                message.contains(name)
                    && message.contains(&expected.to_string())
                    && message.contains(&actual.to_string()),
                "{message}"
            );
            // minisign only sees SHA256SUMS, which is intact: it still verifies, and
            // `sha256sum -c` is what catches the artefact, as the docs tell users to run.
            assert!(release.minisign_verify(&[]).status.success());
            let check =
                run(Command::new("sha256sum").args(["-c", SUMS_FILE]).current_dir(&release.dir));
            assert!(!check.status.success());
            assert!(text(&check.stdout).contains(&format!("{name}: FAILED")));
        }
        fs::write(&path, bytes).unwrap();
    }
    // An empty artefact that gains a byte.
    let (empty, _) = ARTEFACTS[2];
    fs::write(release.dir.join(empty), b"\0").unwrap();
    assert!(matches!(release.verify(), Err(Error::ChecksumMismatch { name, .. }) if name == empty));
}

#[test]
fn a_missing_artefact_is_named() {
    let release = Release::new();
    let (name, _) = ARTEFACTS[1];
    fs::remove_file(release.dir.join(name)).unwrap();
    let err = release.verify().unwrap_err();
    assert!(matches!(&err, Error::MissingArtifact { name: n } if n == name), "{err}");
    assert_eq!(err.to_string(), format!("{name}: file listed in SHA256SUMS is missing"));
}

#[test]
fn an_artefact_replaced_by_a_symbolic_link_is_refused() {
    let release = Release::new();
    let (name, bytes) = ARTEFACTS[0];
    let elsewhere = release.dir.parent().unwrap().join("elsewhere");
    fs::write(&elsewhere, bytes).unwrap();
    fs::remove_file(release.dir.join(name)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, release.dir.join(name)).unwrap();
    assert!(matches!(release.verify(), Err(Error::UnsafeArtifact { .. })));
}

#[test]
fn every_flipped_byte_in_sha256sums_is_caught_by_us_and_by_minisign() {
    let release = Release::new();
    let original = fs::read(release.sums()).unwrap();
    for index in 0..original.len() {
        write_flipped(&release.sums(), &original, index);
        let err = release.verify().unwrap_err();
        assert!(matches!(err, Error::BadSignature), "byte {index}: {err}");
        assert!(err.to_string().starts_with("signature does not verify"), "{err}");
        let out = release.minisign_verify(&[]);
        assert!(!out.status.success(), "minisign accepted SHA256SUMS with byte {index} flipped");
        assert!(text(&out.stderr).contains("Signature verification failed"));
    }
    fs::write(release.sums(), &original).unwrap();
    release.verify().unwrap();
}

#[test]
fn every_flipped_byte_of_the_signatures_is_caught_by_us_and_by_minisign() {
    let release = Release::new();
    let original = fs::read_to_string(release.signature()).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    // Line 2 holds "Ed" || key id || signature of SHA256SUMS; line 4 the signature of the
    // signature and the trusted comment. Flip each decoded byte and write it back encoded.
    for line in [1, 3] {
        let decoded = BASE64.decode(lines[line]).unwrap();
        for index in 0..decoded.len() {
            let mut bytes = decoded.clone();
            bytes[index] ^= 0x01;
            let mut changed = lines.clone();
            let encoded = BASE64.encode(&bytes);
            changed[line] = &encoded;
            fs::write(release.signature(), format!("{}\n", changed.join("\n"))).unwrap();
            let ours = release.verify();
            assert!(ours.is_err(), "line {} byte {index}: we accepted it", line + 1);
            let out = release.minisign_verify(&[]);
            assert!(!out.status.success(), "line {} byte {index}: minisign accepted it", line + 1);
        }
    }
    fs::write(release.signature(), &original).unwrap();
    release.verify().unwrap();
}

#[test]
fn every_flipped_byte_of_the_signature_file_text_is_caught() {
    let release = Release::new();
    let original = fs::read(release.signature()).unwrap();
    // The untrusted comment (line 1) is not signed, by design: start after it.
    let start = original.iter().position(|&b| b == b'\n').unwrap() + 1;
    let trusted_start = start + original[start..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let trusted_end =
        trusted_start + original[trusted_start..].iter().position(|&b| b == b'\n').unwrap();
    for index in start..original.len() {
        if original[index] == b'\n' {
            continue;
        }
        write_flipped(&release.signature(), &original, index);
        let err = release.verify().unwrap_err();
        if (trusted_start + "trusted comment: ".len()..trusted_end).contains(&index) {
            // A changed trusted comment: both name the comment's signature.
            assert!(matches!(err, Error::BadTrustedComment), "byte {index}: {err}");
            let out = release.minisign_verify(&[]);
            assert!(!out.status.success(), "byte {index}: minisign accepted it");
            assert!(text(&out.stderr).contains("Comment signature verification failed"));
        }
    }
    fs::write(release.signature(), &original).unwrap();
    release.verify().unwrap();
}

#[test]
fn a_wrong_public_key_fails_with_us_and_with_minisign() {
    let release = Release::new();
    let tmp = TempDir::new().unwrap();

    // Another key pair: another key id.
    let other = release::write_keypair(tmp.path()).unwrap();
    let err = release::verify_dir(&release.dir, &other.public_key).unwrap_err();
    assert!(matches!(err, Error::KeyIdMismatch { .. }), "{err}");
    let out = minisign_verify(&release.sums(), &release.signature(), &other.public, &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("key id"), "{}", text(&out.stderr));

    // Another key under the release key's id: the signature itself must fail.
    let mut forged = BASE64.decode(release.keys.public_key.to_base64()).unwrap();
    forged[10..].copy_from_slice(other.public_key.as_bytes());
    let forged = PublicKey::from_base64(&BASE64.encode(&forged)).unwrap();
    assert_eq!(forged.key_id(), release.keys.public_key.key_id());
    let err = release::verify_dir(&release.dir, &forged).unwrap_err();
    assert!(matches!(err, Error::BadSignature), "{err}");
    let forged_file = tmp.path().join("forged.pub");
    fs::write(&forged_file, forged.to_file_text()).unwrap();
    let out = minisign_verify(&release.sums(), &release.signature(), &forged_file, &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Signature verification failed"));
}

#[test]
fn signatures_minisign_makes_are_read_by_us() {
    let release = Release::new();
    let tmp = TempDir::new().unwrap();
    let public = tmp.path().join("minisign.pub");
    let secret = tmp.path().join("minisign.key");
    let generated =
        run(Command::new("minisign").args(["-G", "-W", "-p"]).arg(&public).arg("-s").arg(&secret));
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let public_key = release::read_public_key(&public).unwrap();

    // minisign's legacy form is ours: we verify it.
    let legacy = tmp.path().join("legacy.minisig");
    let signed = run(Command::new("minisign")
        .args(["-S", "-l", "-t", "from minisign", "-s"])
        .arg(&secret)
        .arg("-m")
        .arg(release.sums())
        .arg("-x")
        .arg(&legacy));
    assert!(signed.status.success(), "{}", text(&signed.stderr));
    let signature = Signature::parse(&fs::read_to_string(&legacy).unwrap()).unwrap();
    let sums = fs::read(release.sums()).unwrap();
    signature.verify(&public_key, &sums).unwrap();
    assert_eq!(signature.trusted_comment(), "from minisign");

    // Its default, prehashed form needs BLAKE2b: refused, and the reason says so.
    let prehashed = tmp.path().join("prehashed.minisig");
    let signed = run(Command::new("minisign")
        .args(["-S", "-s"])
        .arg(&secret)
        .arg("-m")
        .arg(release.sums())
        .arg("-x")
        .arg(&prehashed));
    assert!(signed.status.success(), "{}", text(&signed.stderr));
    let err = Signature::parse(&fs::read_to_string(&prehashed).unwrap()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedAlgorithm { .. }), "{err}");
    assert!(err.to_string().contains("BLAKE2b"), "{err}");
}

#[test]
fn signing_refuses_what_it_cannot_vouch_for() {
    let key = SecretKey::generate().unwrap();
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    assert!(matches!(release::sign_dir(dir, &key, COMMENT), Err(Error::NoArtifacts { .. })));
    let refused = |setup: &dyn Fn(&Path), expected: &str| {
        let sub = TempDir::new_in(dir).unwrap();
        fs::write(sub.path().join("ok"), "x").unwrap();
        setup(sub.path());
        let err = release::sign_dir(sub.path(), &key, COMMENT).unwrap_err();
        assert!(matches!(err, Error::UnsafeArtifact { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{expected}: {err}");
        assert!(!sub.path().join(SUMS_FILE).exists());
    };
    refused(&|d| fs::create_dir(d.join("subdir")).unwrap(), "not a regular file");
    refused(
        &|d| std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap(),
        "not a regular file",
    );
    refused(&|d| fs::write(d.join(".hidden"), "x").unwrap(), "must not start with a dot");
    refused(&|d| fs::write(d.join("a b"), "x").unwrap(), "may only hold");
    // An invalid trusted comment writes nothing.
    fs::write(dir.join("ok"), "x").unwrap();
    assert!(matches!(release::sign_dir(dir, &key, "two\nlines"), Err(Error::InvalidComment(_))));
    assert!(!dir.join(SUMS_FILE).exists());
}

#[test]
fn hostile_release_files_are_refused_before_any_artefact_is_read() {
    let release = Release::new();
    // A signature file far larger than minisign allows.
    fs::write(release.signature(), "x".repeat(1 << 20)).unwrap();
    assert!(matches!(release.verify(), Err(Error::TooLarge { .. })));
    fs::write(release.signature(), [0xff, 0xfe, b'\n']).unwrap();
    assert!(matches!(release.verify(), Err(Error::MalformedSignature(_))));
    fs::remove_file(release.signature()).unwrap();
    let err = release.verify().unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path.ends_with(SIGNATURE_FILE)), "{err}");
    // A public key file that is not one.
    let bad = release.dir.parent().unwrap().join("bad.pub");
    fs::write(&bad, "untrusted comment: x\nRWQ=\n").unwrap();
    assert!(matches!(release::read_public_key(&bad), Err(Error::MalformedPublicKey(_))));
}

/// Set in the child process of `the_secret_key_is_read_from_an_environment_variable`.
const CHILD_DIR: &str = "CLIPROXY_RELEASE_TEST_CHILD_DIR";
const KEY_VAR: &str = "CLIPROXY_RELEASE_TEST_KEY";

#[test]
fn the_secret_key_is_read_from_an_environment_variable() {
    // Tests never set variables in their own process: this test runs itself again as a child
    // with the key in the environment, as CI does with CLIPROXY_RELEASE_KEY.
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let signed = SecretKey::from_env(KEY_VAR)
            .and_then(|key| release::sign_dir(Path::new(&dir), &key, "signed in the child"));
        if let Err(e) = signed {
            // The message the xtask would print, and nothing else.
            eprintln!("child: {e}");
            std::process::exit(1);
        }
        return;
    }
    let release = Release::new();
    let key_text = fs::read_to_string(&release.keys.secret).unwrap();
    let child = |value: Option<&str>| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "--nocapture", "the_secret_key_is_read_from_an_environment_variable"])
            .env(CHILD_DIR, &release.dir)
            .env_remove(KEY_VAR);
        if let Some(value) = value {
            command.env(KEY_VAR, value);
        }
        run(&mut command)
    };
    for value in [key_text.as_str(), key_text.lines().nth(1).unwrap()] {
        let out = child(Some(value));
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(release.verify().unwrap().trusted_comment, "signed in the child");
        assert!(release.minisign_verify(&[]).status.success());
    }
    // Unset or empty: a clear error that names the variable and shows no key.
    for value in [None, Some("  \n")] {
        let out = child(value);
        assert!(!out.status.success());
        let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(output.contains(&format!("the environment variable {KEY_VAR} is")), "{output}");
    }
    let out = child(Some("not a key"));
    assert!(!out.status.success());
    let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(output.contains("malformed secret key"), "{output}");
    assert!(!output.contains(key_text.lines().nth(1).unwrap()), "{output}");
}

/// The verification through the shared interface: a release that verifies has no finding;
/// a tampered artefact, a changed `SHA256SUMS` and a missing signature are each one finding
/// naming the file; an unreadable directory is no verdict.
#[test]
fn verification_runs_as_an_integrity_check() {
    use cliproxy_integrity::{IntegrityCheck, ReleaseVerification};
    let release = Release::new();
    let check = || ReleaseVerification::new(&release.dir, release.keys.public_key.clone()).run();
    assert_eq!(check().unwrap(), []);

    let (name, bytes) = ARTEFACTS[0];
    write_flipped(&release.dir.join(name), bytes, 0);
    let findings = check().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!((findings[0].check, findings[0].location.as_str()), ("release-verification", name));
    assert!(findings[0].what.contains("SHA-256 mismatch"), "{:?}", findings[0]);
    fs::write(release.dir.join(name), bytes).unwrap();

    let sums = fs::read(release.sums()).unwrap();
    write_flipped(&release.sums(), &sums, 0);
    assert_eq!(check().unwrap()[0].location, SUMS_FILE);
    fs::write(release.sums(), &sums).unwrap();

    fs::remove_file(release.signature()).unwrap();
    assert_eq!(check().unwrap()[0].location, SIGNATURE_FILE);

    let gone = ReleaseVerification::new(
        release.dir.join("no-such-dir/x"),
        release.keys.public_key.clone(),
    );
    assert!(
        matches!(gone.run(), Err(cliproxy_integrity::Error::Release(Error::Io { .. }))),
        "{:?}",
        gone.run()
    );
}
