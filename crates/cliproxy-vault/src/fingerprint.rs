//! The device fingerprint: a stable, non-reversible id of this install that the gateway can
//! send upstream (`auth.device_fingerprint`).
//!
//! It is 32 random bytes in hex, generated on first use and kept in the credential directory
//! (0600), so it stays the same across restarts and says nothing about the machine. Before
//! issue 18 it was an unkeyed SHA-256 of a public salt, the first MAC address and the
//! hostname: anyone who saw it upstream could confirm a guessed MAC and hostname offline, and
//! every install on a machine sent the same id. A persisted random id was chosen over an HMAC
//! of the same inputs keyed with a per-install secret: that secret would have to be kept in
//! the credential directory too, and then the hardware adds nothing but a dependency on
//! netlink. A stored value that is the old hash of this machine is replaced (see
//! `FileStore::device_fingerprint`).

use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// The file in the credential directory the fingerprint is kept in (hidden: never taken for
/// a credential).
pub(crate) const FINGERPRINT_FILE: &str = ".device-fingerprint";
/// The public salt of the old, hardware-derived fingerprint; kept only to recognise it.
const LEGACY_SALT: &[u8] = b"cliproxy-device-fingerprint-v1";

/// A new fingerprint: 32 random bytes in hex.
pub(crate) fn generate() -> Result<String> {
    let mut random = [0u8; 32];
    SystemRandom::new().fill(&mut random).map_err(|_| Error::Random)?;
    Ok(hex(&random))
}

/// The fingerprint the code before issue 18 computed on this machine, when it had a MAC
/// address (without one it was random already, and is kept).
pub(crate) fn legacy_of_this_machine() -> Option<String> {
    let hostname =
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    first_mac().map(|mac| legacy_from_parts(&mac, &hostname))
}

/// The old, unkeyed fingerprint of a MAC address and a hostname.
fn legacy_from_parts(mac: &[u8; 6], hostname: &str) -> String {
    let mut context = Context::new(&SHA256);
    context.update(LEGACY_SALT);
    context.update(&[0]);
    context.update(mac);
    context.update(&[0]);
    context.update(hostname.as_bytes());
    hex(context.finish().as_ref())
}

/// Whether `text` is what [`generate`] produces: 64 lowercase hex digits.
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

    /// Issue 18 item 19: the value is random, not derived from the machine, and not the old
    /// unkeyed hash (which this machine, having a MAC address, can be checked against).
    #[test]
    fn fingerprints_are_random_and_not_the_old_hash() {
        let first = generate().unwrap();
        assert!(is_valid(&first), "{first}");
        assert_ne!(first, generate().unwrap());
        if let Some(legacy) = legacy_of_this_machine() {
            assert_ne!(first, legacy);
        }
        // The old hash is still recognised exactly.
        let old = legacy_from_parts(&[0x02, 0, 0, 0, 0, 1], "host-a");
        assert_eq!(old, legacy_from_parts(&[0x02, 0, 0, 0, 0, 1], "host-a"));
        assert_ne!(old, legacy_from_parts(&[0x02, 0, 0, 0, 0, 1], "host-b"));
    }

    #[test]
    fn validity() {
        assert!(!is_valid(""));
        assert!(!is_valid(&"A".repeat(64)));
        assert!(!is_valid(&"a".repeat(63)));
        assert!(is_valid(&"0".repeat(64)));
    }
}
