//! The wall clock as the gateway's bookkeeping reads it (last use, bans, quotas shown by the
//! management API): whole Unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
