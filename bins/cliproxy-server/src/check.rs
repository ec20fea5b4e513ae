//! `cliproxy-server check`: the pre-deployment checklist. It only reads: nothing is fixed,
//! created or rewritten (unlike `serve`, which tightens loose modes on files it owns).
//!
//! Each row is `ok`, `warn` or `FAIL`; any `FAIL` makes the exit code 1. Later layers (TLS,
//! rate limits, audit) add their rows here.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cliproxy_gateway::Config;
use cliproxy_vault::Protection;

/// One row of the checklist.
struct Row {
    check: &'static str,
    verdict: Verdict,
    detail: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

/// Runs every check against `config` (loaded from `file`, when there is one); prints the
/// table and returns whether everything passed (no `FAIL`).
pub(crate) fn run(config: &Config, file: Option<&Path>) -> bool {
    let mut rows = Vec::new();
    let mut add = |check, verdict, detail: String| rows.push(Row { check, verdict, detail });

    let euid = nix_euid();
    match (euid == 0, config.sandbox.require_non_root) {
        (true, false) => add(
            "not running as root",
            Verdict::Fail,
            "sandbox.require_non_root is false and this runs as uid 0".to_owned(),
        ),
        (true, true) => add(
            "not running as root",
            Verdict::Warn,
            "check runs as uid 0; serve refuses root (sandbox.require_non_root): run check as the service user".to_owned(),
        ),
        (false, _) => add("not running as root", Verdict::Ok, format!("uid {euid}")),
    }

    let keys = config.auth.client_keys().map(|k| k.len());
    match keys {
        Ok(0) => add(
            "client keys",
            Verdict::Fail,
            "auth.api_keys is empty: every request would be refused".to_owned(),
        ),
        Ok(n) => add("client keys", Verdict::Ok, format!("{n} configured")),
        Err(e) => add("client keys", Verdict::Fail, e.to_string()),
    }

    // The store is opened only when auth.dir is already right: opening tightens loose modes,
    // and check must not change anything.
    let dir_ok = check_auth_dir(&config.auth.dir, euid, &mut add);

    let encryption = &config.auth.encryption;
    if !encryption.enabled {
        add(
            "encryption at rest",
            Verdict::Fail,
            "auth.encryption.enabled is false: tokens are stored in plaintext".to_owned(),
        );
    }
    match dir_ok.then(|| config.auth.build()) {
        None => {
            add("credentials readable", Verdict::Warn, "not checked: fix auth.dir first".to_owned())
        }
        Some(Err(e)) => add("credentials readable", Verdict::Fail, e.to_string()),
        Some(Ok(store)) => match store.list() {
            Err(e) => add("credentials readable", Verdict::Fail, e.to_string()),
            Ok(metas) => {
                let plaintext: Vec<&str> = metas
                    .iter()
                    .filter(|m| m.stored == Protection::Plaintext)
                    .map(|m| m.id.as_str())
                    .collect();
                add(
                    "credentials readable",
                    Verdict::Ok,
                    format!("{} credential(s) decrypt", metas.len()),
                );
                if encryption.enabled {
                    if plaintext.is_empty() {
                        add(
                            "encryption at rest",
                            Verdict::Ok,
                            "on; every credential is encrypted".to_owned(),
                        );
                    } else {
                        add(
                            "encryption at rest",
                            Verdict::Fail,
                            format!(
                                "plaintext credential(s) {}: run `cliproxy-server vault migrate`",
                                plaintext.join(", ")
                            ),
                        );
                    }
                }
            }
        },
    }

    let management = &config.management;
    match (management.key().is_some(), management.allow_remote) {
        (false, _) => add("management API", Verdict::Ok, "off (no management.secret_key)".to_owned()),
        (true, false) => add("management API", Verdict::Ok, "loopback only".to_owned()),
        (true, true) => add(
            "management API",
            Verdict::Fail,
            "management.allow_remote is on without TLS on the listener: the management key would cross the network in clear".to_owned(),
        ),
    }

    match file {
        Some(path) => match literal_secrets(path) {
            Ok(found) if found.is_empty() => {
                add(
                    "no secrets in the config file",
                    Verdict::Ok,
                    "keys come from ${VAR} placeholders".to_owned(),
                );
            }
            Ok(found) => add(
                "no secrets in the config file",
                Verdict::Fail,
                format!(
                    "written literally: {} (use \"${{CLIPROXY_...}}\" placeholders)",
                    found.join(", ")
                ),
            ),
            Err(e) => add(
                "no secrets in the config file",
                Verdict::Fail,
                format!("{}: {e}", path.display()),
            ),
        },
        None => add("no secrets in the config file", Verdict::Ok, "no config file".to_owned()),
    }

    let sandbox = &config.sandbox;
    for (on, key) in [
        (sandbox.seccomp, "sandbox.seccomp"),
        (sandbox.landlock, "sandbox.landlock"),
        (sandbox.no_new_privs || sandbox.seccomp, "sandbox.no_new_privs"),
    ] {
        if !on {
            add("sandbox", Verdict::Warn, format!("{key} is off"));
        }
    }
    if sandbox.seccomp && sandbox.landlock {
        add("sandbox", Verdict::Ok, "seccomp allowlist, no_new_privs and landlock on".to_owned());
    }
    match cliproxy_container::posture::Posture::read() {
        Ok(posture) => add("posture of this process", Verdict::Ok, posture.to_string()),
        Err(e) => add("posture of this process", Verdict::Warn, format!("/proc/self/status: {e}")),
    }

    let width = rows.iter().map(|r| r.check.len()).max().unwrap_or(0);
    println!("{:<width$}  {:<6} DETAIL", "CHECK", "RESULT");
    for row in &rows {
        println!("{:<width$}  {:<6} {}", row.check, row.verdict.label(), row.detail);
    }
    let failed = rows.iter().filter(|r| r.verdict == Verdict::Fail).count();
    println!();
    if failed == 0 {
        println!("ready: no check failed");
    } else {
        println!("not ready: {failed} check(s) failed");
    }
    failed == 0
}

/// `auth.dir` must be ours and 0700, each credential file ours and 0600; read-only here.
fn check_auth_dir(
    dir: &Path,
    euid: u32,
    add: &mut impl FnMut(&'static str, Verdict, String),
) -> bool {
    const CHECK: &str = "auth.dir permissions";
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            add(
                CHECK,
                Verdict::Warn,
                format!("{} does not exist yet (serve creates it 0700)", dir.display()),
            );
            return false;
        }
        Err(e) => {
            add(CHECK, Verdict::Fail, format!("{}: {e}", dir.display()));
            return false;
        }
    };
    let mut problems = Vec::new();
    if !meta.is_dir() {
        problems.push(format!("{} is not a directory", dir.display()));
    } else {
        if meta.uid() != euid {
            problems.push(format!("{} is owned by uid {}, not {euid}", dir.display(), meta.uid()));
        }
        if meta.mode() & 0o777 != 0o700 {
            problems.push(format!(
                "{} has mode {:04o}, not 0700",
                dir.display(),
                meta.mode() & 0o7777
            ));
        }
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = fs::symlink_metadata(&path) else { continue };
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") || name.starts_with('.') {
                    if !meta.is_file() {
                        problems.push(format!("{} is not a regular file", path.display()));
                    } else if meta.mode() & 0o777 != 0o600 {
                        problems.push(format!(
                            "{} has mode {:04o}, not 0600",
                            path.display(),
                            meta.mode() & 0o7777
                        ));
                    } else if meta.uid() != euid {
                        problems.push(format!("{} is owned by uid {}", path.display(), meta.uid()));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        add(
            CHECK,
            Verdict::Ok,
            format!("{}: 0700, files 0600, owned by uid {euid}", dir.display()),
        );
        true
    } else {
        add(CHECK, Verdict::Fail, problems.join("; "));
        false
    }
}

/// The secret-holding keys whose value in the file is not a `${VAR}` placeholder. Reads the
/// file as written (before interpolation) and never prints a value.
fn literal_secrets(path: &Path) -> Result<Vec<String>, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    use figment::providers::Format;
    let value: serde_json::Value = figment::Figment::from(figment::providers::Yaml::string(&text))
        .extract()
        .map_err(|e| format!("not valid YAML ({})", e.kind))?;
    let placeholder = |v: &serde_json::Value| {
        v.as_str().is_none_or(|s| {
            let s = s.trim();
            s.is_empty() || (s.starts_with("${") && s.ends_with('}') && !s[2..].contains('$'))
        })
    };
    let mut found = Vec::new();
    let mut check = |key: String, v: &serde_json::Value| {
        if !placeholder(v) {
            found.push(key);
        }
    };
    if let Some(keys) = value.pointer("/auth/api_keys").and_then(|v| v.as_array()) {
        for (i, entry) in keys.iter().enumerate() {
            match entry.get("key") {
                Some(key) => check(format!("auth.api_keys[{i}].key"), key),
                None => check(format!("auth.api_keys[{i}]"), entry),
            }
        }
    }
    if let Some(key) = value.pointer("/auth/encryption/key") {
        check("auth.encryption.key".to_owned(), key);
    }
    if let Some(keys) = value.pointer("/auth/encryption/previous_keys").and_then(|v| v.as_array()) {
        for (i, key) in keys.iter().enumerate() {
            check(format!("auth.encryption.previous_keys[{i}]"), key);
        }
    }
    if let Some(key) = value.pointer("/management/secret_key") {
        check("management.secret_key".to_owned(), key);
    }
    Ok(found)
}

fn nix_euid() -> u32 {
    cliproxy_container::posture::Posture::read().map_or(u32::MAX, |p| p.euid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_secrets_are_found_by_key_never_by_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        fs::write(
            &path,
            "auth:\n  api_keys: [\"${CLIPROXY_CLIENT_KEY}\", \"cpk-literal-0123456789\", {name: b, key: \"${K}\"}, {name: c, key: \"lit-key-0123456789\"}]\n  encryption: {enabled: true, key: \"q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\", previous_keys: [\"${OLD}\"]}\nmanagement: {secret_key: \"${CLIPROXY_MANAGEMENT_KEY}\"}\n",
        )
        .unwrap();
        let found = literal_secrets(&path).unwrap();
        assert_eq!(found, ["auth.api_keys[1]", "auth.api_keys[3].key", "auth.encryption.key"]);
        fs::write(&path, "management: {secret_key: \"pre-${X}\"}\n").unwrap();
        assert_eq!(literal_secrets(&path).unwrap(), ["management.secret_key"]);
    }
}
