//! What the process really runs with, read from `/proc/self/status` and `/proc/self/mounts`,
//! for a program to show at start-up or in a status report ([`Sandbox::posture`] reads it
//! after the sandbox is applied).
//!
//! [`Sandbox::posture`]: crate::Sandbox::posture

use std::fmt;

use serde::Serialize;

/// The security posture of this process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Posture {
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective capabilities, as the kernel's hex mask (`0000000000000000` = none).
    pub cap_eff: String,
    /// `no_new_privs` is set.
    pub no_new_privs: bool,
    /// Seccomp: `disabled`, `strict` or `filter`.
    pub seccomp: &'static str,
    /// Seccomp filters installed.
    pub seccomp_filters: u32,
    /// The root file system is mounted read-only (`None` when `/proc/self/mounts` says
    /// nothing about `/`).
    pub read_only_root: Option<bool>,
}

/// How many threads this process has (`Threads:` in `/proc/self/status`).
pub fn thread_count() -> std::io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:").and_then(|n| n.trim().parse().ok()))
        .ok_or_else(|| std::io::Error::other("/proc/self/status has no Threads: line"))
}

impl Posture {
    /// Reads the posture of this process.
    pub fn read() -> std::io::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        Ok(Self::parse(&status, &mounts))
    }

    /// Parses the contents of `/proc/self/status` and `/proc/self/mounts`.
    pub fn parse(status: &str, mounts: &str) -> Self {
        let field = |name: &str| {
            status.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key == name).then(|| value.trim().to_owned())
            })
        };
        let ids = |name: &str| -> Vec<u32> {
            field(name)
                .map(|v| v.split_whitespace().filter_map(|n| n.parse().ok()).collect())
                .unwrap_or_default()
        };
        let uids = ids("Uid");
        let gids = ids("Gid");
        let seccomp = match field("Seccomp").as_deref() {
            Some("1") => "strict",
            Some("2") => "filter",
            _ => "disabled",
        };
        // The last mount of `/` wins (later mounts hide earlier ones).
        let read_only_root = mounts
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (_, target, _, options) =
                    (parts.next(), parts.next()?, parts.next(), parts.next()?);
                (target == "/").then(|| options.split(',').any(|o| o == "ro"))
            })
            .next_back();
        Self {
            uid: uids.first().copied().unwrap_or(u32::MAX),
            euid: uids.get(1).copied().unwrap_or(u32::MAX),
            gid: gids.first().copied().unwrap_or(u32::MAX),
            cap_eff: field("CapEff").unwrap_or_default(),
            no_new_privs: field("NoNewPrivs").as_deref() == Some("1"),
            seccomp,
            seccomp_filters: field("Seccomp_filters").and_then(|v| v.parse().ok()).unwrap_or(0),
            read_only_root,
        }
    }

    /// Whether the process holds any capability.
    pub fn has_capabilities(&self) -> bool {
        !self.cap_eff.trim_start_matches('0').is_empty()
    }
}

impl fmt::Display for Posture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uid {} (effective {}), gid {}, capabilities {}, no_new_privs {}, seccomp {} ({} filters), root file system {}",
            self.uid,
            self.euid,
            self.gid,
            if self.has_capabilities() { self.cap_eff.as_str() } else { "none" },
            if self.no_new_privs { "on" } else { "off" },
            self.seccomp,
            self.seccomp_filters,
            match self.read_only_root {
                Some(true) => "read-only",
                Some(false) => "writable",
                None => "unknown",
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcliproxy-server\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t2\n";

    #[test]
    fn a_hardened_process_reads_as_such() {
        let mounts = "overlay / overlay rw,relatime 0 0\n/dev/sda1 / ext4 ro,noatime 0 0\ntmpfs /tmp tmpfs rw,nosuid,nodev,noexec 0 0\n";
        let posture = Posture::parse(STATUS, mounts);
        assert_eq!(posture.uid, 65534);
        assert_eq!(posture.euid, 65534);
        assert!(!posture.has_capabilities());
        assert!(posture.no_new_privs);
        assert_eq!(posture.seccomp, "filter");
        assert_eq!(posture.seccomp_filters, 2);
        assert_eq!(posture.read_only_root, Some(true));
        let text = posture.to_string();
        assert!(text.contains("capabilities none") && text.contains("read-only"), "{text}");
    }

    #[test]
    fn root_with_capabilities_and_garbage() {
        let status = "Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\nNoNewPrivs:\t0\nSeccomp:\t0\n";
        let posture = Posture::parse(status, "");
        assert_eq!(posture.euid, 0);
        assert!(posture.has_capabilities());
        assert_eq!(posture.seccomp, "disabled");
        assert_eq!(posture.read_only_root, None);
        let garbage = Posture::parse("\u{0}::\nUid: x y\n", "a b");
        assert_eq!(garbage.uid, u32::MAX);
        assert!(!garbage.no_new_privs);
    }

    #[test]
    fn this_process_can_be_read() {
        let posture = Posture::read().unwrap();
        assert_ne!(posture.uid, u32::MAX);
    }
}
