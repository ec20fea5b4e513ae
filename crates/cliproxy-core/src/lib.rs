//! Shared vocabulary of the cliproxy crates.
//!
//! This crate is deliberately small: it holds only what more than one layer crate needs and
//! what must mean the same thing everywhere.
//!
//! - [`Secret`]: the one wrapper for every key and token in the workspace. Its `Debug` and
//!   `Display` print `[redacted]`, it is zeroized on drop, and it does not implement
//!   `Serialize`, so a secret cannot reach a log line or a JSON body by accident.
//! - [`ErrorCode`]: the stable error codes, each with its HTTP status and its spelling in the
//!   OpenAI, Anthropic and Gemini error formats.
//! - [`duration`]: serde for config durations (`30s`, `5m`, `1h`, `30d`).
//! - [`RateLimit`], [`Quota`]: the per-provider and per-client-key limits, written under both
//!   `providers.<name>` and `auth.api_keys[N]` and enforced by the network guard.
//! - [`glob_match`]: the `*` wildcard used for model names, in routing and in client-key
//!   model allowlists.
//! - [`format_utc`], [`format_utc_plain`]: Unix seconds as UTC text, the two forms shown.
//! - [`private_fs`]: the private file policy (directories 0700, files 0600, owned by us, no
//!   symbolic link followed, a loose mode tightened and told), and its read-only inspection.
//!
//! ```
//! use cliproxy_core::{ErrorCode, Secret};
//!
//! let key = Secret::from("sk-test-0123456789".to_owned());
//! assert_eq!(format!("{key:?}"), "[redacted]");
//! assert_eq!(key.expose(), "sk-test-0123456789");
//! assert_eq!(ErrorCode::PayloadTooLarge.status(), 413);
//! ```

pub mod duration;
mod error_code;
mod glob;
pub mod limits;
pub mod money;
#[cfg(unix)]
pub mod private_fs;
mod secret;
mod utc;

// The public interface is:
pub use error_code::ErrorCode;
pub use glob::glob_match;
pub use limits::{Budget, Quota, QuotaPeriod, RateLimit};
pub use secret::Secret;
pub use utc::{format_utc, format_utc_plain, parse_utc};
