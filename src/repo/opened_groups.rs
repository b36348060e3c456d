//! The solid groups opened last ([`crate::repo::blob::GroupPlace`]): readers take the members
//! of a group one after another (a directory's small files, a pack's blobs in order), and each
//! would otherwise read and decompress the whole group again.

use crate::repo::blob::{
    FindDictionary, OpenFailure, Proof, group_member, open_blob, open_blob_owned, open_group_member,
};
use crate::repo::crypto::MasterKey;
use crate::repo::ids::PackId;
use crate::repo::index::BlobLocation;
use lru::LruCache;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// Groups held: each at most [`crate::repo::blob::MAX_GROUP_LEN`] of plaintext (writers make
/// them under 1 MiB), so 8 MiB at most. Enough for readers that go through a pack in
/// order; the mount's workers read a few directories at once.
const HELD_GROUPS: usize = 8;

/// Opened groups by pack and offset.
type Held = LruCache<(PackId, u32), Arc<Vec<u8>>>;

/// The plaintexts of the last few groups opened, each proven by its AEAD tag (a member taken
/// from one is proven by its own id again).
pub struct OpenedGroups {
    held: Mutex<Held>,
}

impl Default for OpenedGroups {
    fn default() -> Self {
        OpenedGroups {
            held: Mutex::new(LruCache::new(
                NonZeroUsize::new(HELD_GROUPS).expect("not zero"),
            )),
        }
    }
}

impl OpenedGroups {
    /// Member `at`, taken from its group if that is held: no read of the store needed.
    pub fn held_member(
        &self,
        key: &MasterKey,
        at: &BlobLocation,
    ) -> Option<Result<Vec<u8>, OpenFailure>> {
        at.entry.group?;
        let group = self.held.lock().get(&(at.pack, at.entry.offset)).cloned()?;
        Some(group_member(&group, &at.entry.meta(), Proof::Id(key)))
    }

    /// Opens blob `at` from its sealed bytes (its group's, for a member of one, which is then
    /// held for its other members: their sealed bytes are not copied again).
    pub fn open(
        &self,
        key: &MasterKey,
        dictionaries: &dyn FindDictionary,
        at: &BlobLocation,
        sealed: Cow<[u8]>,
    ) -> Result<Vec<u8>, OpenFailure> {
        let meta = at.entry.meta();
        if meta.group.is_none() {
            return match sealed {
                Cow::Borrowed(sealed) => open_blob(key, dictionaries, &meta, sealed),
                Cow::Owned(sealed) => open_blob_owned(key, dictionaries, &meta, sealed),
            };
        }
        if let Some(member) = self.held_member(key, at) {
            return member;
        }
        let (group, member) = open_group_member(Proof::Id(key), key, dictionaries, &meta, sealed)?;
        self.held
            .lock()
            .put((at.pack, at.entry.offset), Arc::new(group));
        Ok(member)
    }

    /// Lets go of every group held from `pack`: it is being read again after a failure.
    pub fn forget(&self, pack: &PackId) {
        let mut held = self.held.lock();
        let stale: Vec<_> = held
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.0 == *pack)
            .collect();
        for k in stale {
            held.pop(&k);
        }
    }
}
