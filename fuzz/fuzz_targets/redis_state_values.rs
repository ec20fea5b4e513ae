//! What the Redis state store reads back from the shared server (SPEC §11): hash fields and
//! values another process — or a person with `redis-cli` — may have written, the audit head,
//! and the change messages of the `changes` channel. Whatever the bytes, each parser accepts
//! or refuses them (the store then skips the entry with a notice) — never a panic.
//!
//! Input layout (the seeds in `fuzz/seeds/redis_state_values/` follow it): byte 0 chooses
//! the parser (0 quota, 1 denylist, 2 bans, 3 cool-downs, 4 client keys, 5 usage history,
//! 6 audit head, 7 change message, modulo 8); the rest is the field, a 0 byte, the value.
#![no_main]

use cliproxy_netguard::redis_store_fuzz::parse_stored_value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&table, rest)) = data.split_first() else { return };
    let (field, value) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let _ = parse_stored_value(table, field, value);
});
