//! `audit verify`: checks the hash chain of one or more audit files.
//!
//! STUB: being written (helper A).
