//! Log handling for long runs: a test that sends hundreds of thousands of requests takes the
//! logs collected so far out of the gateway's buffer (after checking them), so that the test
//! process does not hold a log line per request.

use crate::Gateway;

impl Gateway {
    /// Takes out everything the process wrote so far (stderr and stdout); later
    /// [`Gateway::logs`] calls see only what comes after.
    pub fn drain_logs(&self) -> String {
        std::mem::take(&mut *self.logs.lock().expect("logs"))
    }
}
