//! `cargo xtask release build|sign|verify|keygen`: the command line over
//! `cliproxy_integrity::release`, which does the work (checksums, signatures, key files).
//!
//! - `build [--target T]...`: `cargo build --release --locked -p cliproxy-server` for the
//!   host (or each target) and copies each binary to
//!   `target/release-artifacts/cliproxy-server-<version>-<target>`.
//! - `sign --key FILE | --key-env VAR [--dir DIR]`: writes `SHA256SUMS` and
//!   `SHA256SUMS.minisig` over every file in the directory.
//! - `verify --pubkey FILE [--dir DIR]`: checks the signature, then every checksum; names the
//!   first failure and exits 1.
//! - `keygen --out DIR`: writes a new key pair (secret key 0600, public key in minisign's
//!   format); never overwrites.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use cliproxy_integrity::ReleaseConfig;
use cliproxy_integrity::release::{self, SIGNATURE_FILE, SUMS_FILE, SecretKey};

/// Options of `cargo xtask release`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: ReleaseCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ReleaseCommand {
    /// Build the release binaries and copy them into the artefact directory.
    Build(BuildArgs),
    /// Write SHA256SUMS over every artefact and its minisign signature (SHA256SUMS.minisig).
    Sign(SignArgs),
    /// Check SHA256SUMS.minisig with a public key, then every checksum.
    Verify(VerifyArgs),
    /// Generate a signing key pair (secret key 0600; public key in minisign's format).
    Keygen(KeygenArgs),
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Build for this target triple instead of the host (repeatable), e.g.
    /// x86_64-unknown-linux-musl.
    #[arg(long, value_name = "TRIPLE")]
    target: Vec<String>,
    /// Where the artefacts go [default: <target dir>/release-artifacts].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("secret").required(true).args(["key", "key_env"]))]
struct SignArgs {
    /// The secret key file (from `release keygen`; must be mode 0600).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Read the secret key from this environment variable instead (its value is the key
    /// file's text or just its base64 line), e.g. CLIPROXY_RELEASE_KEY in CI.
    #[arg(long, value_name = "VAR")]
    key_env: Option<String>,
    /// The artefact directory [default: <target dir>/release-artifacts].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// The release public key, in minisign's format.
    #[arg(long, value_name = "FILE")]
    pubkey: PathBuf,
    /// The release directory [default: <target dir>/release-artifacts].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct KeygenArgs {
    /// The directory for cliproxy-release.key and cliproxy-release.pub (created 0700).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        ReleaseCommand::Build(args) => build(args),
        ReleaseCommand::Sign(args) => sign(args),
        ReleaseCommand::Verify(args) => verify(args),
        ReleaseCommand::Keygen(args) => keygen(args),
    }
}

fn build(args: BuildArgs) -> Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(default_dir);
    let version = server_version()?;
    let targets = if args.target.is_empty() {
        vec![None]
    } else {
        args.target.iter().map(|t| Some(t.as_str())).collect()
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for target in targets {
        let mut command = Command::new(cargo());
        command.args(["build", "--release", "--locked", "-p", "cliproxy-server"]);
        if let Some(target) = target {
            command.args(["--target", target]);
        }
        eprintln!("xtask: {command:?}");
        let status = command.status().context("cannot run cargo build")?;
        if !status.success() {
            bail!("building cliproxy-server failed ({status})");
        }
        let (triple, built) = match target {
            Some(triple) => (triple.to_owned(), target_dir().join(triple).join("release")),
            None => (host_triple()?, target_dir().join("release")),
        };
        let built = built.join("cliproxy-server");
        let artefact = dir.join(format!("cliproxy-server-{version}-{triple}"));
        std::fs::copy(&built, &artefact).with_context(|| {
            format!("cannot copy {} to {}", built.display(), artefact.display())
        })?;
        println!("{}", artefact.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn sign(args: SignArgs) -> Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(default_dir);
    let key = match (&args.key, &args.key_env) {
        (Some(path), _) => release::read_secret_key(path)
            .with_context(|| format!("cannot read the secret key {}", path.display()))?,
        (None, Some(var)) => SecretKey::from_env(var)
            .with_context(|| format!("cannot read the secret key in ${var}"))?,
        // clap's required group makes this unreachable; an error is still better than a panic.
        (None, None) => bail!("give --key FILE or --key-env VAR"),
    };
    let comment = format!(
        "timestamp:{}\tfile:{SUMS_FILE}\tcliproxy:{}",
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        server_version()?
    );
    let signed = release::sign_dir(&dir, &key, &comment)
        .with_context(|| format!("cannot sign the release in {}", dir.display()))?;
    for (name, digest) in signed.checksums.iter() {
        println!("{digest}  {name}");
    }
    println!(
        "xtask: wrote {} and {} in {} (key {}, trusted comment {:?})",
        SUMS_FILE,
        SIGNATURE_FILE,
        dir.display(),
        signed.signature.key_id(),
        signed.signature.trusted_comment()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(default_dir);
    let mut config = ReleaseConfig::default();
    config.dir = dir.clone();
    config.public_key = Some(args.pubkey.clone());
    // An empty root: the paths from the command line stay relative to the working directory.
    let verification = config
        .build(Path::new(""))
        .with_context(|| format!("cannot read the public key {}", args.pubkey.display()))?;
    match verification.verify() {
        Ok(verified) => {
            println!(
                "ok: {SIGNATURE_FILE} verifies with key {}; trusted comment: {}",
                verified.key_id,
                printable(&verified.trusted_comment)
            );
            for name in &verified.files {
                println!("ok: {name}");
            }
            for name in &verified.unlisted {
                println!(
                    "warning: {} is not listed in {SUMS_FILE}: nothing vouches for it",
                    printable(name)
                );
            }
            println!("{} files match {SUMS_FILE}", verified.files.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("release verify FAILED in {}: {}", dir.display(), printable(&e.to_string()));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn keygen(args: KeygenArgs) -> Result<ExitCode> {
    let files = release::write_keypair(&args.out)
        .with_context(|| format!("cannot write a key pair in {}", args.out.display()))?;
    println!("secret key: {} (mode 0600; keep it secret)", files.secret.display());
    println!("public key: {} (key id {})", files.public.display(), files.public_key.key_id());
    println!("verify with: minisign -Vm SHA256SUMS -P {}", files.public_key.to_base64());
    Ok(ExitCode::SUCCESS)
}

/// `cliproxy-server`'s version, as cargo reports it (`path+file:///...#0.1.0` or
/// `...#cliproxy-server@0.1.0`).
fn server_version() -> Result<String> {
    let out = Command::new(cargo())
        .args(["pkgid", "-p", "cliproxy-server"])
        .output()
        .context("cannot run cargo pkgid")?;
    if !out.status.success() {
        bail!("cargo pkgid -p cliproxy-server failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let id = String::from_utf8_lossy(&out.stdout);
    let version = id.trim().rsplit(['#', '@']).next().unwrap_or_default();
    if version.is_empty()
        || !version.chars().all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
    {
        bail!("cannot read a version from cargo pkgid's {:?}", id.trim());
    }
    Ok(version.to_owned())
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("cannot run {rustc} -vV"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host triple")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target` (xtask runs from the
/// workspace root, as `.cargo/config.toml`'s alias does).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

fn default_dir() -> PathBuf {
    target_dir().join("release-artifacts")
}

/// A string from a file, with control characters escaped so that it cannot drive the
/// terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}
