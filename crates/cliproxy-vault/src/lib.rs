//! Layer 3 of cliproxy: the credential vault.
