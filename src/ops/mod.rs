//! Operations over whole snapshots and the whole repository: walking, restoring, checking,
//! repairing, retention (forget) and what the snapshots use (usage).

pub mod check;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod session;
pub mod usage;
pub mod walk;
