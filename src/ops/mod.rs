//! Operations over whole snapshots and the whole repository: walking, restoring, checking,
//! repairing and retention (forget).

pub mod check;
pub mod forget;
pub mod repair;
pub mod restore;
pub mod walk;
