//! Operations over whole snapshots and the whole repository: walking, restoring, checking,
//! repairing, retention (forget), what the snapshots use (usage), copying, and looking across
//! snapshots (find, diff). The writer's half of the prune protocol lives below, in
//! [`crate::repo::writer`], so backup never passes through these.

pub mod check;
pub mod copy;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod repair_parity;
pub mod restore;
pub mod scrub;
pub mod usage;
pub mod walk;
