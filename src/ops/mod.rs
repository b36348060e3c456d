//! Operations over whole snapshots and the whole repository: walking, restoring, checking,
//! repairing, retention (forget), what the snapshots use (usage), re-using what an
//! interrupted job stored (adopt), and looking across snapshots (find, diff).

pub mod adopt;
pub mod check;
pub mod copy;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod session;
pub mod usage;
pub mod walk;
