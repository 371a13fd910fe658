//! Canonical forms of what a request names — its path and its authority — shared by the
//! request view ([`crate::request`]) and the configuration, whose path prefixes and hosts are
//! put in the same form so that both sides compare like with like. A leaf module: it knows
//! nothing of the rest of usher.

pub mod authority;
pub mod path;
