//! FUSE faces of the repository. [`view`] serves snapshots read-only; [`inodes`] gives every
//! (snapshot, path) a stable inode number and keeps only what the kernel still remembers;
//! [`catalog`] is the list of snapshots and the index, refreshed as new snapshots appear;
//! [`history`] merges one directory across every snapshot for the view's `history/`.
//! [`stage`] is the writable face: a copy-on-write tree ([`stage_tree`]) whose files
//! ([`stage_file`]) are stored as they are written ([`stage_stream`] cuts them off the request
//! thread), committed as a snapshot.
//! [`workers`] are the threads that answer reads; [`kernel_pages`] stores chunks fetched ahead
//! in the kernel's page cache; [`attrs`] what both faces answer alike.
//! Nothing here knows about packs: bytes come from `fetch`.

pub mod attrs;
pub mod catalog;
pub mod history;
pub mod inodes;
pub mod kernel_pages;
pub mod node_path;
pub mod overlay;
pub mod stage;
pub mod stage_file;
pub mod stage_stream;
pub mod stage_tree;
pub mod view;
pub mod workers;
