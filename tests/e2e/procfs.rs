//! Issue 18, item 11: another process of the gateway's own user cannot read the gateway's
//! secrets through `/proc`. The keys come in as `CLIPROXY_*` environment variables, so before
//! the fix `/proc/PID/environ` handed them to any process of the same uid, and
//! `/proc/PID/mem` let it read the management key out of the heap. The sandbox now makes the
//! process non-dumpable (which gives its `/proc/PID/*` files to root and refuses same-uid
//! ptrace access) and sets its core-file limit to 0.
//!
//! The reader must be neither root nor hold `CAP_SYS_PTRACE` (either can always read
//! `/proc`): run as root, the test starts the gateway as uid 65534 and reads as a child
//! process that drops to uid 65534 too (`setuid` from root clears every capability);
//! run as another user, the gateway and the reader both run as that user.

use std::os::unix::process::CommandExt;
use std::process::Command;

use cliproxy_e2e::{Harness, sweep};

const MGMT_KEY: &str = "cpm-procfs-management-key-3f9c0d81a2e7";

/// The user the gateway and the reader run as: 65534 when the suite runs as root (which could
/// read anything), else the suite's own user.
fn same_user() -> (u32, u32, bool) {
    let root = nix::unistd::geteuid().is_root();
    if root {
        (65534, 65534, true)
    } else {
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw(), false)
    }
}

/// `program`, to be run as the same user as the gateway, without any capability.
fn as_same_user(program: &str) -> Command {
    let (uid, gid, root) = same_user();
    let mut command = Command::new(program);
    if root {
        command.uid(uid).gid(gid);
    }
    command
}

/// The effective uid and the `CapEff` of process `pid`, from `/proc/PID/status` (readable by
/// anyone).
fn euid_and_caps(pid: u32) -> (u32, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap()
    };
    (field("Uid:")[1].parse().unwrap(), field("CapEff:")[0].clone())
}

#[tokio::test]
async fn a_process_of_the_same_user_cannot_read_the_gateways_environment_or_memory() {
    let harness = Harness::new();
    harness.config("", "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n");
    sweep::plant(MGMT_KEY);
    let (uid, gid, _) = same_user();
    // The management key comes from the environment, as the deployment guide has it.
    let gateway = harness
        .start_as_user_with_env(uid, gid, &[("CLIPROXY_MANAGEMENT__SECRET_KEY", MGMT_KEY)])
        .await;
    let pid = gateway.pid();
    let (gateway_uid, _) = euid_and_caps(pid);
    assert_eq!(gateway_uid, uid, "{}", gateway.logs());
    // The key really is in use (so it is in the environment and in memory): the management
    // API takes it.
    let status = cliproxy_e2e::client()
        .get(format!("{}/v0/management/status", gateway.url()))
        .header("X-Management-Key", MGMT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200, "{}", gateway.logs());

    // The reader is that same user and holds no capability: only the gateway's own
    // protection can stop it. `sh -c` reports its own uid and capabilities first, so the
    // test shows the reader is what it claims to be.
    let environ = format!("/proc/{pid}/environ");
    let mem = format!("/proc/{pid}/mem");
    let script = "grep -E '^(Uid|CapEff):' /proc/self/status; \
                  cat \"$1\"; echo \"environ exit $?\"; \
                  (exec 3<\"$2\") && echo 'mem opened'; echo done";
    let output = as_same_user("sh").args(["-c", script, "sh", &environ, &mem]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("done"), "the reader did not run to its end: {report}");
    let reader_uid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(reader_uid, uid.to_string(), "{report}");
    assert!(
        stdout.contains("CapEff:\t0000000000000000"),
        "the reader holds capabilities: {report}"
    );

    // environ: refused at open, and nothing of it (the key least of all) was read.
    assert!(!stdout.contains(MGMT_KEY), "a same-uid process read the key from {environ}");
    assert!(!stdout.contains("CLIPROXY_"), "a same-uid process read {environ}: {report}");
    assert!(
        stdout.contains("environ exit 1")
            && stderr.contains(&format!("{environ}: Permission denied")),
        "{environ} was not refused with EACCES: {report}"
    );
    // mem: refused at open (the ptrace access check), so not a byte of the heap is readable.
    assert!(!stdout.contains("mem opened"), "a same-uid process opened {mem}: {report}");
    assert!(stderr.contains("Permission denied"), "{mem} was not refused with EACCES: {report}");

    // No core file either: the soft and the hard limit are 0, so even a crash leaves the heap
    // nowhere on disk.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("{limits}"));
    let figures: Vec<&str> = core.split_whitespace().skip(4).take(2).collect();
    assert_eq!(figures, ["0", "0"], "core file limits (soft, hard): {core}");

    // The sandbox says so at start-up.
    let sandbox = gateway.wait_for_log(|line| line["msg"] == "sandbox").await;
    assert_eq!(sandbox["protect_memory"], true, "{sandbox}");
    drop(gateway);

    // The control, and the switch: with `sandbox.protect_memory: false` (to attach a
    // debugger) the same reader does read the environment, so the refusals above are the
    // protection's doing, not the reader's inability; and the gateway warns that it is off.
    let harness = Harness::new();
    harness.config("", "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n");
    let gateway = harness
        .start_as_user_with_env(
            uid,
            gid,
            &[
                ("CLIPROXY_MANAGEMENT__SECRET_KEY", MGMT_KEY),
                ("CLIPROXY_SANDBOX__PROTECT_MEMORY", "false"),
            ],
        )
        .await;
    let environ = format!("/proc/{}/environ", gateway.pid());
    let output = as_same_user("sh")
        .args([
            "-c",
            "tr '\\0' '\\n' < \"$1\" | grep -c '^CLIPROXY_MANAGEMENT__SECRET_KEY='",
            "sh",
            &environ,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "1",
        "the reader could not read an unprotected gateway's environ either: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let warning = gateway
        .wait_for_log(|line| {
            line["msg"].as_str().is_some_and(|m| m.contains("sandbox.protect_memory"))
        })
        .await;
    assert_eq!(warning["level"], "WARN", "{warning}");
}
