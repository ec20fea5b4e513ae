//! `cliproxy-server` as a library: the configuration file ([`config`]: the top-level
//! `Config` assembled from each crate's section, and its loader) and the composition
//! ([`compose`]: each layer built from its section and handed to the gateway). The command
//! line (`main.rs`) uses both; so do the gateway's integration tests, which build whole
//! gateways from YAML as `serve` does.

pub mod compose;
pub mod config;
