//! A private network namespace for one test thread, so that a test can serve the gateway on a
//! real listener and connect to it from a real non-loopback source address.
//!
//! The gateway's management gate asks `IpAddr::is_loopback()`, which is true for all of
//! 127.0.0.0/8: a second loopback address cannot stand for a remote peer. A private network
//! namespace can hold any address without touching the host's network: the addresses are put
//! on the namespace's own `lo`, the listener and every client socket are created in it, and the
//! kernel reports the client's real source address to `accept`. The namespace belongs to the
//! thread that created it (and the threads and processes it starts), so it disappears with the
//! thread: there is nothing to clean up, even after a panic.
//!
//! Creating a namespace needs root (`CAP_SYS_ADMIN`), and `.ci/run` runs the tests as root, as the
//! disk-fault tests (`unshare --mount`, `chattr +i`) also need. Without it the test fails and
//! says why rather than skipping, since a skipped test proves nothing.

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs `body` on a new thread inside a new network namespace whose `lo` is up and also holds
/// `addresses` (each as a /32), and returns what it returns; a panic in `body` is the caller's.
pub(crate) fn run_in_private_network<T: Send + 'static>(
    addresses: &[Ipv4Addr],
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let addresses = addresses.to_vec();
    let thread = std::thread::Builder::new()
        .name("private-network".to_owned())
        .spawn(move || {
            enter(&addresses);
            body()
        })
        .unwrap();
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Moves the calling thread into a new network namespace and configures its `lo`.
fn enter(addresses: &[Ipv4Addr]) {
    if let Err(errno) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        panic!(
            "this test needs its own network namespace so that a real TCP peer can have a \
             non-loopback address, and creating one needs root (CAP_SYS_ADMIN): run the tests \
             as root, as .ci/run does (unshare(CLONE_NEWNET) failed: {errno})"
        );
    }
    // `ip` runs as a child of this thread, so it configures this thread's new namespace.
    ip(&["link", "set", "lo", "up"]);
    for address in addresses {
        ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"]);
    }
    // The addresses are usable here, which also shows that the namespace is this thread's.
    for address in addresses {
        std::net::TcpListener::bind((*address, 0)).unwrap_or_else(|e| {
            panic!("{address} was added to the private namespace but cannot be bound: {e}")
        });
    }
}

/// Runs `ip ARGS` (iproute2) and fails the test with its output when it fails.
fn ip(args: &[&str]) {
    // Root's PATH usually has the sbin directories, but a PATH without them should not fail
    // the test where iproute2 is installed.
    let program = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or("ip");
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{program}` (iproute2, needed to set up the private network namespace): {e}"
        )
    });
    assert!(
        output.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
