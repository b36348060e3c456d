//! Operations over whole snapshots and the whole repository: walking, restoring, checking and
//! repairing.

pub mod check;
pub mod repair;
pub mod restore;
pub mod walk;
