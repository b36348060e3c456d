//! Operations over whole snapshots: walking them, listing them, restoring them.

pub mod restore;
pub mod walk;
