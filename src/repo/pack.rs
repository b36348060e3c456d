//! Packs: sealed blobs back to back, then a sealed header listing them, then the header's length
//! (u32 LE) and an 8-byte magic. A pack's name is the SHA-256 of its bytes.
//!
//! [`verify_pack`] re-reads a finished pack from its final bytes — header decrypted, every blob
//! opened, decompressed and re-hashed — so corruption between hashing and storing is caught
//! before upload, not days later by a check.

use crate::error::{Error, Result};
use crate::repo::blob::{
    BlobMeta, FindDictionary, GroupPlace, MAX_GROUP_LEN, Proof, SealedBlob, SealedGroup,
    open_group, open_proven, proven_member,
};
use crate::repo::crypto::MasterKey;
use crate::repo::ids::{BlobId, BlobKind, PackId, sha256};
use crate::repo::serial;
use crate::repo::witness::Witness;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Last 8 bytes of every pack.
pub const MAGIC: &[u8; 8] = b"CAIRNPK1";
/// Length of the fixed tail: header length (4) + magic (8).
pub const TRAILER_LEN: usize = 12;
/// Bounds the header a damaged trailer may claim (about 650,000 entries of about 50 bytes).
pub const MAX_HEADER_LEN: u32 = 32 << 20;
/// Blobs after which a writer ships a pack (a header of about 10 MiB), whatever their bytes:
/// members of solid groups of tiny or repetitive files cost a pack a few bytes each, so its
/// size alone would let the header of a 16 MiB pack pass [`MAX_HEADER_LEN`]. A group added
/// to a pack just below it adds its members (writers seal a group at 8,192), so a pack lists
/// at most 208,191.
pub const MAX_PACK_BLOBS: usize = 200_000;
const HEADER_AAD: &[u8] = b"cairn pack header";

/// One blob as the pack header lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// The blob's id.
    pub id: BlobId,
    /// Data or tree; a pack holds one kind.
    pub kind: BlobKind,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub sealed_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
    /// Where the blob lies in the solid group sealed at `offset`, when it is a member of one
    /// (then `offset`, `sealed_len` and `compressed` are the group's, shared by its members).
    pub group: Option<GroupPlace>,
}

/// A [`PackEntry`] as format version 1 writes it (no solid groups): read, and written for lists
/// with no group member ([`entries_version`]).
#[derive(Serialize, Deserialize)]
pub struct PackEntryV1 {
    id: BlobId,
    kind: BlobKind,
    offset: u32,
    sealed_len: u32,
    raw_len: u32,
    compressed: bool,
}

impl From<PackEntryV1> for PackEntry {
    fn from(v1: PackEntryV1) -> PackEntry {
        PackEntry {
            id: v1.id,
            kind: v1.kind,
            offset: v1.offset,
            sealed_len: v1.sealed_len,
            raw_len: v1.raw_len,
            compressed: v1.compressed,
            group: None,
        }
    }
}

impl From<&PackEntry> for PackEntryV1 {
    /// The entry without its place in a group: for entries that have none.
    fn from(entry: &PackEntry) -> PackEntryV1 {
        debug_assert!(entry.group.is_none(), "format version 1 has no groups");
        PackEntryV1 {
            id: entry.id,
            kind: entry.kind,
            offset: entry.offset,
            sealed_len: entry.sealed_len,
            raw_len: entry.raw_len,
            compressed: entry.compressed,
        }
    }
}

/// The format version of pack headers and index segments that lists solid groups.
pub const ENTRIES_VERSION: u8 = 2;

/// The format version a list of `entries` is written in: the oldest that holds them, 1 when no
/// entry is a member of a solid group. A repository whose config has no groups then gets only
/// what builds older than groups read.
pub fn entries_version<'e>(mut entries: impl Iterator<Item = &'e PackEntry>) -> u8 {
    match entries.any(|entry| entry.group.is_some()) {
        true => ENTRIES_VERSION,
        false => 1,
    }
}

/// Parses a list serialized with its format version: version 1 lists are read as lists of
/// [`PackEntryV1`] and converted by `upgrade`.
pub fn decode_entries<T: serde::de::DeserializeOwned, V1: serde::de::DeserializeOwned>(
    plain: &[u8],
    what: &str,
    upgrade: impl FnOnce(V1) -> T,
) -> Result<T> {
    match serial::split_version(plain, what)? {
        (1, body) => serial::decode_body::<V1>(body, what).map(upgrade),
        (ENTRIES_VERSION, body) => serial::decode_body(body, what),
        (version, _) => Err(serial::unknown_version(version, what)),
    }
}

/// Largest plaintext of a data blob: the largest `chunk_max` a repository may have.
pub const MAX_DATA_BLOB: u32 = 16 << 20;
/// Largest plaintext of a tree blob: a directory piece, or one node listing the chunks of a
/// file of several terabytes.
pub const MAX_TREE_BLOB: u32 = 256 << 20;
/// Bytes sealing adds beyond the payload (nonce, tag), with room for framing.
const SEALED_SLACK: u32 = 64;

impl PackEntry {
    /// Why this entry cannot describe a blob cairn writes, or `None`. An index or header entry
    /// that claims more is refused where it is parsed: every reader reads `sealed_len` bytes
    /// into memory, so a crafted length would otherwise decide how much memory a read takes.
    pub fn implausible(&self) -> Option<String> {
        let most = match self.kind {
            BlobKind::Data => MAX_DATA_BLOB,
            BlobKind::Tree => MAX_TREE_BLOB,
        };
        let payload_len = self.group.map_or(self.raw_len, |g| g.len);
        if self.raw_len > most || self.sealed_len > payload_len.saturating_add(SEALED_SLACK) {
            return Some(format!(
                "blob {} claims {} bytes ({} sealed), more than a {:?} blob can hold ({most})",
                self.id, self.raw_len, self.sealed_len, self.kind
            ));
        }
        match self.group {
            Some(group)
                if self.kind != BlobKind::Data
                    || group.len > MAX_GROUP_LEN
                    || u64::from(group.start) + u64::from(self.raw_len) > u64::from(group.len) =>
            {
                Some(format!(
                    "blob {} claims the place {}+{} in a solid group of {} bytes, which a {:?} \
                     blob cannot have (groups hold data blobs, at most {MAX_GROUP_LEN} bytes)",
                    self.id, group.start, self.raw_len, group.len, self.kind
                ))
            }
            _ => None,
        }
    }

    /// What the blob claims to be, for opening it.
    pub fn meta(&self) -> BlobMeta {
        BlobMeta {
            id: self.id,
            kind: self.kind,
            raw_len: self.raw_len,
            compressed: self.compressed,
            group: self.group,
        }
    }

    /// The memory opening the blob takes at its peak: the sealed bytes read, and beside them
    /// the decompressed plaintext when it is compressed (an uncompressed blob is opened in
    /// place); for a member of a solid group, its group's plaintext and its own copied out.
    /// Readers count it against their budget before they read.
    pub fn open_bytes(&self) -> usize {
        let payload = self.group.map_or(self.raw_len, |g| g.len);
        let decompressed = if self.compressed { payload } else { 0 };
        let member = if self.group.is_some() {
            self.raw_len
        } else {
            0
        };
        self.sealed_len as usize + decompressed as usize + member as usize
    }

    /// The stored bytes that are this blob's: its sealed length, or for a member of a solid
    /// group its share of the group's by plaintext length — what space accounting (prune,
    /// stats) sums, so a group's bytes are counted once over its members.
    pub fn stored_share(&self) -> u64 {
        match self.group {
            Some(group) if group.len > 0 => {
                u64::from(self.sealed_len) * u64::from(self.raw_len) / u64::from(group.len)
            }
            _ => u64::from(self.sealed_len),
        }
    }

    /// The byte range of its sealed payload (its group's, for a member of one) in its pack.
    pub fn sealed_range(&self) -> std::ops::Range<u64> {
        u64::from(self.offset)..u64::from(self.offset) + u64::from(self.sealed_len)
    }
}

/// Collects sealed blobs of one kind until the pack is big enough to store.
pub struct PackBuilder {
    kind: BlobKind,
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
    witnesses: Vec<Witness>,
}

/// A finished pack: its bytes, its name, and what it holds.
pub struct FinishedPack {
    /// SHA-256 of `bytes`.
    pub id: PackId,
    /// The whole file.
    pub bytes: Vec<u8>,
    /// The blobs, in file order.
    pub entries: Vec<PackEntry>,
    /// What the writer noted while computing each blob's id, in the same order: what
    /// [`verify_pack`] checks the blobs by.
    pub witnesses: Vec<Witness>,
    /// What was noted while naming `bytes`: [`verify_pack`] checks by it that neither changed
    /// after (cheaper than hashing them with SHA-256 a second time).
    pub witness: Witness,
}

impl PackBuilder {
    /// An empty pack for blobs of `kind`, with room reserved for `capacity` bytes.
    pub fn new(kind: BlobKind, capacity: usize) -> Self {
        PackBuilder {
            kind,
            bytes: Vec::with_capacity(capacity),
            entries: Vec::new(),
            witnesses: Vec::new(),
        }
    }

    /// Appends a sealed blob, with what was noted while its id was computed.
    pub fn add(&mut self, blob: &SealedBlob, witness: Witness) {
        assert_eq!(blob.kind, self.kind, "a pack holds one kind of blob");
        let offset = u32::try_from(self.bytes.len()).expect("packs stay below 4 GiB");
        let sealed_len = u32::try_from(blob.bytes.len()).expect("blobs stay below 4 GiB");
        self.bytes.extend_from_slice(&blob.bytes);
        self.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            offset,
            sealed_len,
            raw_len: blob.raw_len,
            compressed: blob.compressed,
            group: None,
        });
        self.witnesses.push(witness);
    }

    /// Appends a sealed solid group of data blobs: `members` lists each blob's id, plaintext
    /// length and witness, in the order their plaintexts were concatenated.
    pub fn add_group(&mut self, group: &SealedGroup, members: &[(BlobId, u32, Witness)]) {
        assert_eq!(self.kind, BlobKind::Data, "solid groups hold data blobs");
        let offset = u32::try_from(self.bytes.len()).expect("packs stay below 4 GiB");
        let sealed_len = u32::try_from(group.bytes.len()).expect("groups stay below 4 GiB");
        self.bytes.extend_from_slice(&group.bytes);
        let mut start = 0u32;
        for &(id, raw_len, witness) in members {
            self.entries.push(PackEntry {
                id,
                kind: BlobKind::Data,
                offset,
                sealed_len,
                raw_len,
                compressed: group.compressed,
                group: Some(GroupPlace {
                    start,
                    len: group.raw_len,
                }),
            });
            self.witnesses.push(witness);
            start += raw_len;
        }
        assert_eq!(start, group.raw_len, "a group is its members back to back");
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pack should be finished: `target` bytes, or [`MAX_PACK_BLOBS`] blobs.
    pub fn is_full(&self, target: usize) -> bool {
        self.bytes.len() >= target || self.entries.len() >= MAX_PACK_BLOBS
    }

    /// Appends the sealed header and trailer and names the pack.
    pub fn finish(mut self, key: &MasterKey) -> FinishedPack {
        let plain = match entries_version(self.entries.iter()) {
            ENTRIES_VERSION => serial::encode_version(ENTRIES_VERSION, &self.entries),
            old => {
                let entries: Vec<PackEntryV1> = self.entries.iter().map(Into::into).collect();
                serial::encode_version(old, &entries)
            }
        };
        let header = key.seal(&plain, HEADER_AAD);
        let header_len = u32::try_from(header.len()).expect("headers stay below 4 GiB");
        // Exactly what is left, in one step where the reserved room falls short (a header of
        // hundreds of thousands of entries), rather than doubling a pack's buffer.
        self.bytes.reserve_exact(header.len() + TRAILER_LEN);
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(&header_len.to_le_bytes());
        self.bytes.extend_from_slice(MAGIC);
        let (id, witness) = Witness::name(&self.bytes, sha256);
        FinishedPack {
            id: PackId(id),
            bytes: self.bytes,
            entries: self.entries,
            witnesses: self.witnesses,
            witness,
        }
    }
}

/// Reads the header length from a pack's last [`TRAILER_LEN`] bytes.
pub fn header_len_from_trailer(pack: &PackId, trailer: &[u8]) -> Result<u32> {
    let name = pack_name(pack);
    if trailer.len() != TRAILER_LEN || &trailer[4..] != MAGIC {
        return Err(Error::corrupt(
            name,
            "no pack trailer (truncated or not a pack)",
        ));
    }
    let len = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    if len > MAX_HEADER_LEN {
        return Err(Error::corrupt(
            name,
            format!("header length {len} exceeds the limit"),
        ));
    }
    Ok(len)
}

/// Decrypts and parses a sealed pack header, checking every entry lies inside `data_len`.
pub fn parse_header(
    key: &MasterKey,
    pack: &PackId,
    sealed: &[u8],
    data_len: u64,
) -> Result<Vec<PackEntry>> {
    let name = pack_name(pack);
    let plain = key
        .open(sealed, HEADER_AAD)
        .map_err(|e| Error::corrupt(&name, format!("header: {e}")))?;
    let entries = decode_header(&plain, &name)?;
    for entry in &entries {
        if u64::from(entry.offset) + u64::from(entry.sealed_len) > data_len {
            return Err(Error::corrupt(
                &name,
                format!("blob {} lies outside the pack", entry.id),
            ));
        }
        if let Some(reason) = entry.implausible() {
            return Err(Error::corrupt(&name, format!("header: {reason}")));
        }
    }
    Ok(entries)
}

/// Parses a pack header's plaintext, of either format version (nothing is checked beyond the
/// encoding: [`parse_header`] checks the entries).
pub fn decode_header(plain: &[u8], what: &str) -> Result<Vec<PackEntry>> {
    decode_entries(plain, what, |v1: Vec<PackEntryV1>| {
        v1.into_iter().map(PackEntry::from).collect()
    })
}

/// Parses the header of a whole pack held in memory.
pub fn read_header(key: &MasterKey, pack: &PackId, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    let name = pack_name(pack);
    if bytes.len() < TRAILER_LEN {
        return Err(Error::corrupt(name, "shorter than a pack trailer"));
    }
    let header_len = header_len_from_trailer(pack, &bytes[bytes.len() - TRAILER_LEN..])? as usize;
    let header_end = bytes.len() - TRAILER_LEN;
    let header_start = header_end
        .checked_sub(header_len)
        .ok_or_else(|| Error::corrupt(&name, "header longer than the pack"))?;
    parse_header(
        key,
        pack,
        &bytes[header_start..header_end],
        header_start as u64,
    )
}

/// Proves a finished pack is right from its final bytes: neither they nor their name changed
/// since they were named, the header parses and equals what was added, and every blob opens to
/// the plaintext its id was computed from, under that id ([`Witness`]).
pub fn verify_pack(
    key: &MasterKey,
    dictionaries: &dyn FindDictionary,
    pack: &FinishedPack,
) -> Result<()> {
    let fail = |blob: BlobId, reason: String| Error::PackVerify { blob, reason };
    if let Err(why) = pack.witness.attest(&pack.id.0, &pack.bytes) {
        return Err(fail(
            BlobId::default(),
            format!("pack bytes changed after naming ({why})"),
        ));
    }
    if pack.witnesses.len() != pack.entries.len() {
        return Err(fail(
            BlobId::default(),
            "a blob was added without its witness".into(),
        ));
    }
    let header = read_header(key, &pack.id, &pack.bytes)?;
    if header != pack.entries {
        return Err(fail(
            BlobId::default(),
            "pack header differs from the blobs added".into(),
        ));
    }
    // One blob after another, on the thread that sealed the pack's last blob: verified on the
    // global pool, its blobs could wait for ever behind workers that wait for the sealers
    // (their queue is bounded) — a stage commit hung so. The other sealers go on meanwhile.
    // A solid group is opened once, with its first member, and its other members taken from it.
    let mut group: Option<(u32, Vec<u8>)> = None;
    header
        .iter()
        .zip(&pack.witnesses)
        .try_for_each(|(entry, witness)| {
            let start = entry.offset as usize;
            let sealed = &pack.bytes[start..start + entry.sealed_len as usize];
            let proof = Proof::Witnessed(*witness);
            let opened = match &group {
                Some((at, plain)) if entry.group.is_some() && *at == entry.offset => {
                    proven_member(plain, &entry.meta(), proof).map(drop)
                }
                _ if entry.group.is_some() => open_group(
                    proof,
                    key,
                    dictionaries,
                    &entry.meta(),
                    Cow::Borrowed(sealed),
                )
                .map(|plain| group = Some((entry.offset, plain))),
                _ => open_proven(
                    proof,
                    key,
                    dictionaries,
                    &entry.meta(),
                    Cow::Borrowed(sealed),
                )
                .map(drop),
            };
            opened.map_err(|failure| fail(entry.id, failure.to_string()))
        })
}

/// The backend name of a pack: `data/<first two hex digits>/<id>`.
pub fn pack_name(pack: &PackId) -> String {
    let hex = pack.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blob::{Compression, NoDictionaries, open_blob, seal_blob, seal_group};
    use crate::repo::crypto::MasterSecrets;

    fn pack_of(key: &MasterKey, blobs: &[&[u8]]) -> FinishedPack {
        let mut builder = PackBuilder::new(BlobKind::Data, 0);
        for data in blobs {
            let (id, witness) = Witness::name(data, |p| key.blob_id(p).0);
            let sealed = seal_blob(key, BlobId(id), BlobKind::Data, data, Compression::level(3));
            builder.add(&sealed, witness);
        }
        builder.finish(key)
    }

    #[test]
    fn finished_pack_verifies_and_header_reads_back() {
        let key = MasterKey::new(MasterSecrets::generate());
        let pack = pack_of(&key, &[b"one", b"two", &[9u8; 5000]]);
        verify_pack(&key, &NoDictionaries, &pack).unwrap();
        let header = read_header(&key, &pack.id, &pack.bytes).unwrap();
        assert_eq!(header.len(), 3);
        assert_eq!(header[1].id, key.blob_id(b"two"));
    }

    #[test]
    fn corruption_after_naming_is_caught_before_upload() {
        let key = MasterKey::new(MasterSecrets::generate());
        let mut pack = pack_of(&key, &[b"one", b"two"]);
        pack.bytes[20] ^= 0x10;
        let err = verify_pack(&key, &NoDictionaries, &pack).unwrap_err();
        assert!(
            err.to_string().contains("pack bytes changed after naming"),
            "{err}"
        );
    }

    #[test]
    fn a_pack_name_changed_after_naming_is_caught_before_upload() {
        let key = MasterKey::new(MasterSecrets::generate());
        let mut pack = pack_of(&key, &[b"one"]);
        pack.id.0[0] ^= 0x01;
        let err = verify_pack(&key, &NoDictionaries, &pack).unwrap_err();
        assert!(err.to_string().contains("its id differs"), "{err}");
    }

    #[test]
    fn a_sealed_blob_corrupted_before_naming_is_caught_before_upload() {
        let key = MasterKey::new(MasterSecrets::generate());
        let mut pack = pack_of(&key, &[b"one", b"two"]);
        pack.bytes[20] ^= 0x10;
        let (id, witness) = Witness::name(&pack.bytes, sha256);
        (pack.id, pack.witness) = (PackId(id), witness);
        let err = verify_pack(&key, &NoDictionaries, &pack).unwrap_err();
        assert!(
            matches!(err, Error::PackVerify { blob, .. } if blob == key.blob_id(b"one")),
            "{err}"
        );
    }

    #[test]
    fn plaintext_changed_after_its_id_was_computed_is_caught_before_upload() {
        // What bad RAM does between hashing a chunk and sealing it: the sealed blob is sound,
        // its id and tag agree, only the plaintext is not what was hashed.
        let key = MasterKey::new(MasterSecrets::generate());
        let mut builder = PackBuilder::new(BlobKind::Data, 0);
        let hashed = b"the chunk as read".to_vec();
        let (id, witness) = Witness::name(&hashed, |p| key.blob_id(p).0);
        let id = BlobId(id);
        let flipped = b"the chunk as reae".to_vec();
        let how = Compression::level(3);
        builder.add(&seal_blob(&key, id, BlobKind::Data, &flipped, how), witness);
        let err = verify_pack(&key, &NoDictionaries, &builder.finish(&key)).unwrap_err();
        assert!(
            matches!(&err, Error::PackVerify { blob, reason } if *blob == id
                && reason.contains("differs from the bytes its id was computed from")),
            "{err}"
        );
    }

    #[test]
    fn an_id_changed_after_it_was_computed_is_caught_before_upload() {
        // Bad RAM in the id a sealer job carries: the blob is sealed and indexed under an id
        // its content does not have, consistently, so only the witness can tell.
        let key = MasterKey::new(MasterSecrets::generate());
        let mut builder = PackBuilder::new(BlobKind::Data, 0);
        let data = b"a chunk".to_vec();
        let (mut id, witness) = Witness::name(&data, |p| key.blob_id(p).0);
        id[3] ^= 0x04;
        let how = Compression::level(3);
        builder.add(
            &seal_blob(&key, BlobId(id), BlobKind::Data, &data, how),
            witness,
        );
        let err = verify_pack(&key, &NoDictionaries, &builder.finish(&key)).unwrap_err();
        assert!(
            matches!(&err, Error::PackVerify { blob, reason } if *blob == BlobId(id)
                && reason.contains("its id differs from the one computed from its content")),
            "{err}"
        );
    }

    /// Each member's id, length and witness, as the packer lists a group's members.
    fn listed(key: &MasterKey, members: &[&[u8]]) -> Vec<(BlobId, u32, Witness)> {
        let named = |m: &&[u8]| {
            let (id, witness) = Witness::name(m, |p| key.blob_id(p).0);
            (BlobId(id), m.len() as u32, witness)
        };
        members.iter().map(named).collect()
    }

    /// A pack holding `alone` sealed by itself, then `members` in one solid group.
    fn grouped_pack(key: &MasterKey, alone: &[u8], members: &[&[u8]]) -> PackBuilder {
        let mut builder = PackBuilder::new(BlobKind::Data, 0);
        let (id, witness) = Witness::name(alone, |p| key.blob_id(p).0);
        let how = Compression::level(3);
        builder.add(
            &seal_blob(key, BlobId(id), BlobKind::Data, alone, how),
            witness,
        );
        let listed = listed(key, members);
        let group = seal_group(key, &members.concat(), how);
        builder.add_group(&group, &listed);
        builder
    }

    /// The format version a finished pack's header was written in.
    fn header_version(key: &MasterKey, pack: &FinishedPack) -> u8 {
        let end = pack.bytes.len() - TRAILER_LEN;
        let len = header_len_from_trailer(&pack.id, &pack.bytes[end..]).unwrap() as usize;
        key.open(&pack.bytes[end - len..end], HEADER_AAD).unwrap()[0]
    }

    #[test]
    fn a_header_is_written_in_the_oldest_version_that_holds_it() {
        // Blobs alone: version 1, what builds before groups read (a repository without groups
        // writes only such packs); a group member: version 2. Both read back as added.
        let key = MasterKey::new(MasterSecrets::generate());
        let alone = pack_of(&key, &[b"one", b"two"]);
        assert_eq!(header_version(&key, &alone), 1);
        assert_eq!(
            read_header(&key, &alone.id, &alone.bytes).unwrap(),
            alone.entries
        );
        verify_pack(&key, &NoDictionaries, &alone).unwrap();
        let grouped = grouped_pack(&key, b"alone", &[b"a", b"b"]).finish(&key);
        assert_eq!(header_version(&key, &grouped), ENTRIES_VERSION);
        assert_eq!(
            read_header(&key, &grouped.id, &grouped.bytes).unwrap(),
            grouped.entries
        );
    }

    #[test]
    fn a_solid_group_verifies_and_each_member_reads_back() {
        let key = MasterKey::new(MasterSecrets::generate());
        let members: [&[u8]; 3] = [b"first small file\n", b"", &[7u8; 3000]];
        let pack = grouped_pack(&key, b"alone", &members).finish(&key);
        verify_pack(&key, &NoDictionaries, &pack).unwrap();
        let header = read_header(&key, &pack.id, &pack.bytes).unwrap();
        assert_eq!(header.len(), 4);
        assert!(header[0].group.is_none());
        // The members share the group's sealed bytes and lie back to back in its plaintext.
        let group_len = members.iter().map(|m| m.len() as u32).sum();
        let mut start = 0;
        for (entry, data) in header[1..].iter().zip(members) {
            assert_eq!(entry.offset, header[1].offset);
            assert_eq!(
                entry.group,
                Some(GroupPlace {
                    start,
                    len: group_len
                })
            );
            start += data.len() as u32;
            let sealed =
                &pack.bytes[entry.sealed_range().start as usize..entry.sealed_range().end as usize];
            assert_eq!(
                open_blob(&key, &NoDictionaries, &entry.meta(), sealed).unwrap(),
                data
            );
        }
        // A member is proven by its own id: another member's place under its id fails.
        let mut swapped = header[1];
        swapped.id = header[3].id;
        let sealed =
            &pack.bytes[swapped.sealed_range().start as usize..swapped.sealed_range().end as usize];
        let err = open_blob(&key, &NoDictionaries, &swapped.meta(), sealed).unwrap_err();
        assert!(
            err.to_string().contains("length") || err.to_string().contains("does not match"),
            "{err}"
        );
        // The shares of the group's bytes add up to them, less rounding.
        let shares: u64 = header[1..].iter().map(PackEntry::stored_share).sum();
        assert!(
            shares <= u64::from(header[1].sealed_len)
                && shares + 3 >= u64::from(header[1].sealed_len)
        );
    }

    #[test]
    fn a_group_member_changed_after_its_id_was_computed_is_caught_before_upload() {
        let key = MasterKey::new(MasterSecrets::generate());
        let mut builder = PackBuilder::new(BlobKind::Data, 0);
        let members: [&[u8]; 2] = [b"one small file", b"another small file"];
        let listed = listed(&key, &members);
        // The second member's bytes flipped between hashing and gathering into the group.
        let group = seal_group(
            &key,
            b"one small fileanother small fild",
            Compression::level(3),
        );
        builder.add_group(&group, &listed);
        let err = verify_pack(&key, &NoDictionaries, &builder.finish(&key)).unwrap_err();
        assert!(
            matches!(&err, Error::PackVerify { blob, reason } if *blob == listed[1].0
                && reason.contains("differs from the bytes its id was computed from")),
            "{err}"
        );
    }

    #[test]
    fn a_header_of_format_version_1_reads_as_before() {
        // Written before solid groups: (id, kind, offset, sealed_len, raw_len, compressed).
        let id = BlobId([5; 32]);
        let v1 = serial::encode_version(1, &vec![(id, BlobKind::Data, 0u32, 90u32, 60u32, true)]);
        let entries = decode_header(&v1, "pack").unwrap();
        assert_eq!(
            entries,
            [PackEntry {
                id,
                kind: BlobKind::Data,
                offset: 0,
                sealed_len: 90,
                raw_len: 60,
                compressed: true,
                group: None
            }]
        );
        assert!(decode_header(&serial::encode_version(3, &entries), "pack").is_err());
    }

    #[test]
    fn a_member_claiming_more_than_its_group_is_implausible() {
        let entry = PackEntry {
            id: BlobId([1; 32]),
            kind: BlobKind::Data,
            offset: 0,
            sealed_len: 100,
            raw_len: 50,
            compressed: true,
            group: Some(GroupPlace {
                start: 60,
                len: 100,
            }),
        };
        assert!(entry.implausible().is_some());
        let huge = PackEntry {
            group: Some(GroupPlace {
                start: 0,
                len: MAX_GROUP_LEN + 1,
            }),
            ..entry
        };
        assert!(huge.implausible().is_some());
        let tree = PackEntry {
            kind: BlobKind::Tree,
            group: Some(GroupPlace { start: 0, len: 100 }),
            ..entry
        };
        assert!(tree.implausible().is_some());
        assert!(
            PackEntry {
                group: Some(GroupPlace {
                    start: 50,
                    len: 100
                }),
                ..entry
            }
            .implausible()
            .is_none()
        );
    }

    proptest::proptest! {
        #[test]
        fn any_blobs_pack_verify_and_read_back(blobs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3000), 1..12)) {
            let key = MasterKey::new(MasterSecrets::generate());
            let slices: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
            let pack = pack_of(&key, &slices);
            verify_pack(&key, &NoDictionaries, &pack).unwrap();
            let header = read_header(&key, &pack.id, &pack.bytes).unwrap();
            for (entry, data) in header.iter().zip(&blobs) {
                let sealed = &pack.bytes[entry.offset as usize..(entry.offset + entry.sealed_len) as usize];
                proptest::prop_assert_eq!(&open_blob(&key, &NoDictionaries, &entry.meta(), sealed).unwrap(), data);
            }
        }

        #[test]
        fn pack_parser_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let key = MasterKey::new(MasterSecrets::generate());
            let _ = read_header(&key, &PackId::default(), &bytes);
        }
    }

    #[test]
    fn truncated_pack_is_an_error_not_a_panic() {
        let key = MasterKey::new(MasterSecrets::generate());
        let pack = pack_of(&key, &[b"one"]);
        for cut in [0, 5, pack.bytes.len() / 2, pack.bytes.len() - 1] {
            assert!(read_header(&key, &pack.id, &pack.bytes[..cut]).is_err());
        }
    }
}
