//! The device fingerprint: a stable, non-reversible id of this machine that the gateway can
//! send upstream (`auth.device_fingerprint`).
//!
//! It is SHA-256 over a fixed salt, the MAC address of the first interface that is up and not
//! loopback (in name order), and the hostname, in hex. It is computed once and persisted in
//! `auth.dir`, so it stays the same across restarts even when interfaces or the hostname
//! change later; a machine without a MAC (some containers) gets a persisted random id.

use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// The file in `auth.dir` the fingerprint is kept in (hidden: never taken for a credential).
pub(crate) const FINGERPRINT_FILE: &str = ".device-fingerprint";
const SALT: &[u8] = b"cliproxy-device-fingerprint-v1";

/// Where a fingerprint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// MAC address and hostname.
    Hardware,
    /// No usable MAC address: random.
    Random,
}

/// Computes a fresh fingerprint for this machine.
pub(crate) fn compute() -> Result<(String, Source)> {
    let hostname =
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    match first_mac() {
        Some(mac) => Ok((from_parts(&mac, &hostname), Source::Hardware)),
        None => {
            let mut random = [0u8; 32];
            SystemRandom::new().fill(&mut random).map_err(|_| Error::Random)?;
            Ok((hex(&random), Source::Random))
        }
    }
}

/// The fingerprint of a MAC address and a hostname.
pub(crate) fn from_parts(mac: &[u8; 6], hostname: &str) -> String {
    let mut context = Context::new(&SHA256);
    context.update(SALT);
    context.update(&[0]);
    context.update(mac);
    context.update(&[0]);
    context.update(hostname.as_bytes());
    hex(context.finish().as_ref())
}

/// Whether `text` is what [`compute`] produces: 64 lowercase hex digits.
pub(crate) fn is_valid(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The MAC address of the first interface (by name) that is up, not loopback, and has a
/// non-zero hardware address.
fn first_mac() -> Option<[u8; 6]> {
    use nix::net::if_::InterfaceFlags;
    let mut candidates: Vec<(String, [u8; 6])> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|i| {
            i.flags.contains(InterfaceFlags::IFF_UP)
                && !i.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|i| {
            let mac = i.address.as_ref()?.as_link_addr()?.addr()?;
            (mac != [0; 6]).then_some((i.interface_name, mac))
        })
        .collect();
    candidates.sort();
    candidates.into_iter().next().map(|(_, mac)| mac)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_depend_on_mac_and_hostname_only() {
        let a = from_parts(&[0x02, 0, 0, 0, 0, 1], "host-a");
        assert!(is_valid(&a), "{a}");
        assert_eq!(a, from_parts(&[0x02, 0, 0, 0, 0, 1], "host-a"));
        assert_ne!(a, from_parts(&[0x02, 0, 0, 0, 0, 2], "host-a"));
        assert_ne!(a, from_parts(&[0x02, 0, 0, 0, 0, 1], "host-b"));
    }

    #[test]
    fn computing_twice_on_one_machine_agrees_unless_random() {
        let (first, source) = compute().unwrap();
        assert!(is_valid(&first));
        let (second, _) = compute().unwrap();
        match source {
            Source::Hardware => assert_eq!(first, second),
            Source::Random => assert_ne!(first, second),
        }
    }

    #[test]
    fn validity() {
        assert!(!is_valid(""));
        assert!(!is_valid(&"A".repeat(64)));
        assert!(!is_valid(&"a".repeat(63)));
        assert!(is_valid(&"0".repeat(64)));
    }
}
