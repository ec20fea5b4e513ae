//! The process around the gateway: health endpoints, graceful shutdown on SIGTERM with a
//! stream in flight, and configuration errors that stop it with exit code 78.

use std::sync::Arc;

use cliproxy_e2e::canned::*;
use cliproxy_e2e::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

use crate::assert_no_secrets;

const TOKEN: &str = "sk-vault-lifecycle-token-5150";

#[tokio::test]
async fn sigterm_finishes_the_stream_in_flight_then_exits_0() {
    // The scheduler follows the CPUs this process (and so the gateway) may run on.
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let scheduler = if cpus == 1 { "current-thread" } else { "multi-thread" };
    serve_a_stream_then_stop_on_sigterm(&[], scheduler).await;
}

/// On one CPU the gateway runs tokio's current-thread scheduler; everything else is the same.
#[tokio::test]
async fn on_one_cpu_the_current_thread_scheduler_serves_and_stops_the_same_way() {
    serve_a_stream_then_stop_on_sigterm(&["taskset", "-c", "0"], "current-thread").await;
}

/// Health, a stream held open across SIGTERM that still completes, no new connections after
/// it, exit 0; the gateway started through `wrapper` and logging `scheduler`.
async fn serve_a_stream_then_stop_on_sigterm(wrapper: &[&str], scheduler: &str) {
    let gate = Arc::new(Notify::new());
    let upstream_gate = Arc::clone(&gate);
    let words = ["one", " two", " three"];
    let mock = MockUpstream::start(move |_| Reply::Sse {
        events: openai_stream("gpt-4o", &words),
        // The role chunk and the first word go out before the gate.
        hold_after: 2,
        gate: Some(Arc::clone(&upstream_gate)),
    })
    .await;
    let harness = Harness::new();
    harness.config(
        "",
        &format!(
            "providers:\n  oa: {{type: openai, base_url: \"{}\", models: [\"gpt-*\"]}}\n",
            mock.url()
        ),
    );
    harness.vault_add("oa", "oa-1", TOKEN, None);
    let mut gateway = harness.start_via(wrapper).await;
    let client = client();
    let runtime = gateway.wait_for_log(|e| e["msg"] == "async runtime").await;
    assert_eq!(runtime["scheduler"], scheduler, "{runtime}");

    let health = client.get(format!("{}/healthz", gateway.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(format!("{}/readyz", gateway.url())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");

    let mut response = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "count"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    read_until(&mut response, &mut seen, "\"one\"").await;

    gateway.terminate();
    gateway
        .wait_for_log(|e| e["msg"].as_str().is_some_and(|m| m.starts_with("shutting down")))
        .await;
    // No new connections once shutdown has begun.
    assert!(
        tokio::net::TcpStream::connect(gateway.addr()).await.is_err(),
        "the listener still accepts connections after SIGTERM"
    );

    // The stream in flight still completes.
    gate.notify_one();
    read_to_end(&mut response, &mut seen).await;
    assert!(seen.contains("\" three\"") && seen.contains("data: [DONE]"), "{seen}");
    let status = gateway.wait().await;
    assert_eq!(status.code(), Some(0), "logs:\n{}", gateway.logs());
    let logs = gateway.logs();
    assert!(gateway.log_entries("all connections finished").len() == 1, "{logs}");
    assert_no_secrets(&logs, &[CLIENT_KEY, TOKEN]);
}

#[tokio::test]
async fn configuration_errors_exit_78_naming_the_key() {
    let harness = Harness::new();
    harness.config("max_body_bytez: 10", "providers: {}\n");
    let output = harness.run(&["serve"]).await;
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.limits.max_body_bytez"), "{stderr}");

    harness.config(
        "",
        "providers:\n  oa: {type: openai, models: [\"gpt-*\"], base_url: \"ftp://example\"}\n",
    );
    let output = harness.run(&["serve"]).await;
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("providers.oa.base_url"), "{stderr}");
    assert_no_secrets(&stderr, &[CLIENT_KEY]);
}

#[tokio::test]
async fn models_lists_what_the_providers_serve() {
    let harness = Harness::new();
    harness
        .config("", "providers:\n  demo: {type: mock, models: [\"mock-small\", \"mock-large\"]}\n");
    let gateway = harness.start().await;
    let response = client()
        .get(format!("{}/v1/models", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let mut ids: Vec<&str> =
        body["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["mock-large", "mock-small"]);
}

/// `/readyz` answers anyone who can reach the port, so when a check fails it names the check
/// and no path of the host's file system; the path is in the log line and in the
/// authenticated management status.
#[tokio::test]
async fn readyz_names_the_failing_check_but_no_file_path() {
    const MGMT_KEY: &str = "cpm-readyz-management-key-62f0a1";
    let harness = Harness::new();
    harness.config(
        "",
        &format!(
            "management: {{secret_key: \"{MGMT_KEY}\"}}\nproviders:\n  demo: {{type: mock}}\n"
        ),
    );
    let gateway = harness.start().await;
    let auth_dir = harness.auth_dir().display().to_string();
    std::fs::remove_dir_all(harness.auth_dir()).unwrap();
    let response = client().get(format!("{}/readyz", gateway.url())).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["failing"], "vault", "{body}");
    assert!(!body.contains(&auth_dir) && !body.contains('/'), "{body}");
    let logged = gateway.wait_for_log(|e| e["msg"] == "readiness check failed").await;
    assert!(logged["error"].as_str().unwrap().contains(&auth_dir), "{logged}");
    let (status, body) =
        manage_with(&gateway, MGMT_KEY, reqwest::Method::GET, "/status", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["readiness"]["vault"].as_str().unwrap().contains(&auth_dir), "{body}");
}

/// `healthcheck` (for container HEALTHCHECKs) exits 0 against a live gateway and 1, naming
/// the address, when nothing healthy answers.
#[tokio::test]
async fn healthcheck_probes_the_liveness_endpoint() {
    let harness = Harness::new();
    harness.config("", "");
    let mut gateway = harness.start().await;
    let addr = gateway.addr().to_string();
    let output = harness.run(&["healthcheck", "--addr", &addr]).await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&addr));
    gateway.terminate();
    gateway.wait().await;
    let output = harness.run(&["healthcheck", "--addr", &addr]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unhealthy") && stderr.contains(&addr), "{stderr}");
}

/// The suite's gateway runs under the full sandbox: the start-up log shows the seccomp filter,
/// no_new_privs and landlock in force, and the posture read back from /proc agrees.
#[tokio::test]
async fn the_gateway_runs_sandboxed() {
    const MANAGEMENT_KEY: &str = "mgmt-e2e-status-key-0123456789";
    let harness = Harness::new();
    harness.config("", &format!("management: {{secret_key: \"{MANAGEMENT_KEY}\"}}\n"));
    let gateway = harness.start().await;
    let line = gateway.wait_for_log(|line| line["msg"] == "sandbox").await;
    assert_eq!(line["seccomp"], true, "{line}");
    assert_eq!(line["no_new_privs"], true, "{line}");
    let posture = line["posture"].as_str().unwrap();
    assert!(
        posture.contains("no_new_privs on") && posture.contains("seccomp filter (2 filters)"),
        "{posture}"
    );
    let landlock = line["landlock"].as_str().unwrap();
    if landlock.starts_with("unsupported") {
        // Never silent: a warning says the file system is not restricted.
        assert!(gateway.logs().contains("landlock is not supported by this kernel"));
    } else {
        assert_eq!(landlock, "enforced", "{line}");
    }
    // And it serves; the management status shows the same posture.
    let response = client().get(format!("{}/healthz", gateway.url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let status: Value = client()
        .get(format!("{}/v0/management/status", gateway.url()))
        .header("x-management-key", MANAGEMENT_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"), "{status}");
    let sandbox = &status["layers"]["sandbox"];
    assert_eq!(sandbox["applied"]["seccomp"], true, "{status}");
    assert_eq!(sandbox["applied"]["landlock"], landlock, "{status}");
    assert_eq!(sandbox["posture"]["seccomp"], "filter", "{status}");
    assert_eq!(sandbox["posture"]["no_new_privs"], true, "{status}");
    assert_eq!(sandbox["posture"]["seccomp_filters"], 2, "{status}");
    assert_eq!(status["layers"]["vault"]["encryption"]["enabled"], false, "{status}");
}

/// The root check with its real default (`sandbox.require_non_root` true; unlike
/// [`Harness::start`], nothing overrides it): started as root the gateway refuses, exit 78
/// naming the key; started as an unprivileged user (uid and gid 65534, `nobody`, dropped to by
/// the child before it runs) the same configuration starts and serves.
///
/// The suite runs as root (here and in CI); as any other user, the root half runs in a user
/// namespace where that user is uid 0 (`unshare --user --map-root-user`) and the other half as
/// that user.
#[tokio::test]
async fn running_as_root_is_refused_by_default_and_a_non_root_user_is_served() {
    let harness = Harness::new();
    harness.config("", "");
    let root = euid_of("self") == 0;
    let mut command = if root {
        tokio::process::Command::new(server_binary())
    } else {
        let mut command = tokio::process::Command::new("unshare");
        command.args(["--user", "--map-root-user"]).arg(server_binary());
        command
    };
    let mut child = command
        .arg("--config")
        .arg(harness.config_path())
        .arg("serve")
        .env_remove("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Its standard error to the end (it exits), or up to a `listening` line (it started).
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    while let Some(line) = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap() {
        assert!(
            !line.contains("\"msg\":\"listening\""),
            "started as root with sandbox.require_non_root at its default, the gateway serves:\n\
             {stderr}{line}"
        );
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("refusing to run as root") && stderr.contains("sandbox.require_non_root"),
        "{stderr}"
    );

    // Not root: the same configuration starts and serves, and the process really runs as
    // that user.
    let (uid, gid) = if root {
        (65534, 65534)
    } else {
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    };
    let gateway = harness.start_as_user(uid, gid).await;
    assert_eq!(euid_of(&gateway.pid().to_string()), uid, "{}", gateway.logs());
    let health = client().get(format!("{}/healthz", gateway.url())).send().await.unwrap();
    assert_eq!(health.status(), 200, "{}", gateway.logs());
    let models = client()
        .get(format!("{}/v1/models", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200, "{}", gateway.logs());
    assert!(!gateway.logs().contains("refusing to run as root"), "{}", gateway.logs());
}

/// The effective uid of the process `pid` (`self` for this one), from `/proc`.
fn euid_of(pid: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).and_then(|euid| euid.parse().ok()))
        .unwrap()
}

/// `check` passes a sound deployment and fails, naming the key, a literal secret in the file,
/// a loose credential file and a plaintext credential — without changing any of them.
#[tokio::test]
async fn check_reports_each_problem_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    const ENCRYPTION_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    let harness = Harness::new();
    // The keys come from the environment, as a deployment should do it; no sandbox override:
    // check itself judges whether running as root is allowed.
    let command = |args: &[&str]| {
        let mut command = std::process::Command::new(server_binary());
        command
            .arg("--config")
            .arg(harness.config_path())
            .args(args)
            .env("CLIPROXY_E2E_ENCRYPTION_KEY", ENCRYPTION_KEY)
            .env("CLIPROXY_E2E_CLIENT_KEY", CLIENT_KEY)
            .env_remove("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT");
        command
    };
    // Sound: placeholders only, encryption on, one encrypted credential.
    harness.write_config(&format!(
        "auth:\n  api_keys: [{{name: e2e, key: \"${{CLIPROXY_E2E_CLIENT_KEY}}\"}}]\n  dir: {:?}\n  encryption: {{enabled: true, key: \"${{CLIPROXY_E2E_ENCRYPTION_KEY}}\"}}\n\
         providers: {{oa: {{type: openai, base_url: \"http://127.0.0.1:9\", models: [\"gpt-*\"]}}}}\n\
         logging: {{audit: {{enabled: true, file: {:?}}}}}\n",
        harness.auth_dir().display().to_string(),
        harness.auth_dir().with_file_name("audit.log").display().to_string()
    ));
    let mut child = command(&["vault", "add", "--provider", "oa", "--id", "oa-1"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"sk-e2e-check-token-000000\n").unwrap();
    }
    assert!(child.wait().unwrap().success());
    let run = |_: &Harness| command(&["check"]).output().unwrap();
    let output = run(&harness);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ready: no check failed") && !stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("1 credential(s) decrypt"), "{stdout}");

    // A literal key in the file and a loose credential file: both named, nothing fixed.
    let config = std::fs::read_to_string(harness.config_path()).unwrap();
    harness.write_config(&config.replace("${CLIPROXY_E2E_CLIENT_KEY}", CLIENT_KEY));
    let file = harness.auth_dir().join("oa-1.json");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = run(&harness);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("written literally: auth.api_keys[0].key"), "{stdout}");
    assert!(stdout.contains("has mode 0644, not 0600"), "{stdout}");
    assert!(!stdout.contains(CLIENT_KEY), "check printed the key:\n{stdout}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644,
        "check changed a mode"
    );
}

/// The demo keeps its vault and audit log in a directory of its own under the temporary
/// directory; stopped with SIGTERM or Ctrl-C (SIGINT), it leaves nothing behind, not even
/// the empty directory (which its sandbox does not let it remove itself).
#[tokio::test]
async fn the_demo_removes_its_directory_when_it_stops() {
    for signal in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGINT] {
        let (mut child, banner) = demo(&["--port", "0"]).await;
        let audit = banner
            .lines()
            .find_map(|l| l.trim().strip_prefix("cliproxy-server audit verify"))
            .map(|rest| std::path::PathBuf::from(rest.split_whitespace().next().unwrap()))
            .unwrap_or_else(|| panic!("no audit file in the banner:\n{banner}"));
        let dir = audit.parent().and_then(std::path::Path::parent).unwrap().to_owned();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("cliproxy-demo-"), "{}", dir.display());
        assert!(dir.join("auths").is_dir(), "{}", dir.display());
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{signal}: {status}");
        // The exit is the event: the directory is gone by the time the demo has exited.
        assert!(!dir.exists(), "{signal}: {} is still there after the demo exited", dir.display());
    }
}

/// Killed outright (SIGKILL: no handler runs), the demo still leaves nothing behind: its
/// cleanup helper sees the demo's end of their pipe close and removes the directory, contents
/// and all.
#[tokio::test]
async fn a_killed_demo_leaves_no_directory_behind() {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new(server_binary())
        .args(["demo", "--port", "0"])
        .env("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let audit = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.trim().strip_prefix("cliproxy-server audit verify") {
                return std::path::PathBuf::from(rest.trim());
            }
        }
        panic!("the demo's banner names no audit file");
    })
    .await
    .unwrap();
    let dir = audit.parent().and_then(std::path::Path::parent).unwrap().to_owned();
    assert!(dir.join("auths").is_dir(), "{}", dir.display());
    child.kill().await.unwrap();
    // The helper holds the demo's standard error until it exits, after the removal: end of
    // file on it is the event to wait for.
    let mut stderr = child.stderr.take().unwrap();
    let mut errors = String::new();
    tokio::time::timeout(WAIT, stderr.read_to_string(&mut errors)).await.unwrap().unwrap();
    assert!(!dir.exists(), "{} is still there after a SIGKILL; stderr: {errors}", dir.display());
}
