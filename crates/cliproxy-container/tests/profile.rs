//! `deploy/seccomp-profile.json` is the generated profile, byte for byte: the container
//! runtime and the in-process filter enforce the same list.

#![allow(clippy::unwrap_used, reason = "tests")]

#[test]
fn the_shipped_profile_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/seccomp-profile.json");
    let shipped = std::fs::read_to_string(path).unwrap();
    assert!(
        shipped == cliproxy_container::profile::docker(),
        "deploy/seccomp-profile.json is out of date with the syscall allowlist: regenerate it with `cargo run -p cliproxy-server -- sandbox profile --format docker > deploy/seccomp-profile.json`"
    );
}
