//! Solid groups being gathered: small data blobs are concatenated and compressed as one zstd
//! frame, sealed once ([`crate::repo::blob::GroupPlace`]), because a small file compressed alone
//! starts from an empty window. Measured on linux/ (78,579 files, zstd 1.5.7, one thread,
//! content bytes): each file alone at level 3, 254 MB in 6.3 s; blobs of at most 128 KiB in
//! groups of 256 KiB, level 3, 213 MB in 4.8 s; the same at level 2 with the job's dictionary,
//! 214 MB in 4.3 s; groups of 512 KiB, 209 MB. In cairn (first backup of linux/, 2 cores, 4
//! interleaved rounds, medians), groups of 896 KiB against 256 KiB: at level 3 218 against 225
//! MiB, at level 2 229 against 236 MiB, for 2-4 % less CPU (fewer frames). The larger group is
//! what lets the default level be 1 ([`crate::repo::config::DEFAULT_COMPRESSION`]) with room
//! under 90 % of restic's repository. A reader opening one small file alone (the mount, `dump`)
//! decompresses its group, under a millisecond; readers going through a pack open each once.

use crate::repo::dictionary::Dictionary;
use crate::repo::ids::{BlobId, BlobKind};
use crate::repo::witness::Witness;
use parking_lot::Mutex;
use std::sync::Arc;

/// Data blobs at most this large join a group; larger ones are sealed alone.
pub const GROUP_MEMBER_MAX: usize = 128 << 10;
/// A group is sealed once its plaintext reaches this: with a last member of at most
/// [`GROUP_MEMBER_MAX`], under [`crate::repo::blob::MAX_GROUP_LEN`].
pub const GROUP_TARGET: usize = 896 << 10;
const _: () = assert!(GROUP_TARGET + GROUP_MEMBER_MAX <= crate::repo::blob::MAX_GROUP_LEN as usize);
/// The smallest group target a repository of small packs gets.
const MIN_GROUP_TARGET: usize = 16 << 10;
/// A group is sealed once it has this many members, however small: tiny files cost a group a
/// few bytes each, and each costs its pack a header entry
/// ([`crate::repo::pack::MAX_PACK_BLOBS`]).
pub const GROUP_MEMBERS_MAX: usize = 8192;

/// Blobs gathered for one group, in the order their plaintexts are concatenated.
#[derive(Default)]
pub struct Gathered {
    /// The members' plaintexts back to back.
    pub plaintext: Vec<u8>,
    /// Each member's id, plaintext length, and what was noted while its id was computed.
    pub members: Vec<(BlobId, u32, Witness)>,
    /// The job's dictionary, when a member was admitted with it: the group is compressed with it.
    pub dictionary: Option<Arc<Dictionary>>,
}

/// The group being gathered by a job's sealing threads.
pub struct Groups {
    open: Mutex<Gathered>,
    /// When a group is sealed: once it reaches [`GROUP_TARGET`], or half a pack of a repository
    /// whose packs are smaller (a group is never split between packs, so it would make them
    /// larger; with members of at most half the target, a group stays under three quarters
    /// of a pack). Zero in a repository without groups: no blob joins one.
    target: usize,
}

impl Groups {
    /// Groups for packs of `pack_size` bytes, in a repository whose config says it has them
    /// (`enabled`); otherwise every blob is sealed alone, as builds before groups did.
    pub fn new(pack_size: usize, enabled: bool) -> Groups {
        Groups {
            open: Mutex::default(),
            target: match enabled {
                true => (pack_size / 2).clamp(MIN_GROUP_TARGET, GROUP_TARGET),
                false => 0,
            },
        }
    }

    /// Whether a blob of `kind` and `len` bytes joins a group (at most half a group).
    pub fn joins(&self, kind: BlobKind, len: usize) -> bool {
        self.target > 0 && kind == BlobKind::Data && len <= GROUP_MEMBER_MAX.min(self.target / 2)
    }

    /// Adds a member; returns the group once it is full, for the caller to seal.
    pub fn add(
        &self,
        id: BlobId,
        witness: Witness,
        plaintext: &[u8],
        dictionary: Option<Arc<Dictionary>>,
    ) -> Option<Gathered> {
        let len = u32::try_from(plaintext.len()).expect("members are at most 128 KiB");
        let mut open = self.open.lock();
        if open.members.is_empty() {
            // The most a group holds, reserved once rather than grown by doubling.
            open.plaintext
                .reserve(self.target + GROUP_MEMBER_MAX.min(self.target / 2));
        }
        open.plaintext.extend_from_slice(plaintext);
        open.members.push((id, len, witness));
        if open.dictionary.is_none() {
            open.dictionary = dictionary;
        }
        let full = open.plaintext.len() >= self.target || open.members.len() >= GROUP_MEMBERS_MAX;
        full.then(|| std::mem::take(&mut *open))
    }

    /// The group gathered so far, however full; `None` when it has no member.
    pub fn take(&self) -> Option<Gathered> {
        let taken = std::mem::take(&mut *self.open.lock());
        (!taken.members.is_empty()).then_some(taken)
    }
}
