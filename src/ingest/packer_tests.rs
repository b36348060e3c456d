//! Tests of the packer: background sealing, locating blobs still in flight, and the
//! pre-upload check on a sealer thread.
use super::*;
use crate::backend::local::LocalBackend;
use crate::repo::keys::KdfParams;
use crate::repo::pack::{MAX_PACK_BLOBS, PackEntry};

const KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// A repository of 256 KiB packs.
fn repository(dir: &std::path::Path) -> Arc<Repository> {
    let params = Params {
        pack_size: 256 << 10,
        ..Params::default()
    };
    repository_of(dir, params)
}

fn repository_of(dir: &std::path::Path, params: Params) -> Arc<Repository> {
    let backend = Arc::new(LocalBackend::new(dir.join("repo")));
    Arc::new(Repository::init(backend, b"pw", KDF, params).expect("init"))
}

fn sealing(threads: usize, bytes: usize) -> IngestLimits {
    IngestLimits {
        track_locations: true,
        sealer_threads: threads,
        sealing_bytes: bytes,
        ..IngestLimits::default()
    }
}

/// Stores `blobs` as data blobs through a packer sealing inline; their ids.
fn store_all(repo: &Arc<Repository>, blobs: &[Vec<u8>]) -> Vec<BlobId> {
    let index = Arc::new(repo.load_index().expect("index"));
    let packer = Packer::new(repo.clone(), index, sealing(0, 0), false);
    let ids = blobs
        .iter()
        .map(|b| packer.add(BlobKind::Data, b).expect("add"))
        .collect();
    packer.finish().expect("finish");
    ids
}

/// Distinct incompressible blobs of a few KiB each.
fn blob(i: u32) -> Vec<u8> {
    let mut state = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) + 1;
    (0..4096 + i)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn background_sealing_stores_every_blob_by_finish() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = repository(dir.path());
    let index = Arc::new(repo.load_index().expect("index"));
    // A queue far smaller than one blob: every add waits for the one before.
    let packer = Packer::new(repo.clone(), index, sealing(2, 1), false);
    let ids: Vec<BlobId> = (0..300)
        .map(|i| packer.add(BlobKind::Data, &blob(i)).expect("add"))
        .collect();
    let totals = packer.finish().expect("finish");
    assert_eq!(totals.new_blobs, 300);
    assert!(totals.packs >= 4, "{} packs", totals.packs);
    let index = repo.load_index().expect("index");
    for (i, id) in ids.iter().enumerate() {
        let at = index.get(id).expect("indexed");
        assert_eq!(repo.read_blob(&at).expect("read"), blob(i as u32));
    }
}

#[test]
fn a_blob_still_with_the_sealers_is_located_once_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = repository(dir.path());
    let index = Arc::new(repo.load_index().expect("index"));
    let packer = Packer::new(repo.clone(), index, sealing(1, 32 << 20), false);
    let ids: Vec<BlobId> = (0..50)
        .map(|i| packer.add(BlobKind::Data, &blob(i)).expect("add"))
        .collect();
    // Right after the adds most blobs are queued or in the open pack, none stored yet.
    let at = packer.locate(&ids[49]).expect("locate").expect("added");
    assert_eq!(repo.read_blob(&at).expect("read"), blob(49));
    assert!(packer.locate(&BlobId::default()).expect("locate").is_none());
    packer.finish().expect("finish");
}

#[test]
fn corruption_between_hashing_and_sealing_fails_the_job_on_a_sealer_thread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = repository(dir.path());
    let index = Arc::new(repo.load_index().expect("index"));
    let mut packer = Packer::new(repo.clone(), index, sealing(1, 32 << 20), false);
    packer.set_corrupt_hook(Arc::new(|plain: &mut Vec<u8>| plain[0] ^= 1));
    for i in 0..100 {
        if packer.add(BlobKind::Data, &blob(i)).is_err() {
            break;
        }
    }
    let err = packer.finish().expect_err("the pre-upload check fails");
    assert!(matches!(err, Error::PackVerify { .. }), "{err}");
    assert!(repo.load_index().expect("index").is_empty());
}

#[test]
fn small_blobs_are_sealed_in_solid_groups_and_every_member_is_read_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = repository(dir.path());
    // An empty blob shares its place in the group with the next one: both are delivered.
    let mut blobs = vec![Vec::new()];
    blobs.extend((0..40).map(blob));
    blobs.push(vec![3u8; 200 << 10]);
    let ids = store_all(&repo, &blobs);
    let index = repo.load_index().expect("index");
    let at: Vec<BlobLocation> = ids
        .iter()
        .map(|id| index.get(id).expect("indexed"))
        .collect();
    assert!(
        at[..41].iter().all(|a| a.entry.group.is_some()),
        "small blobs are members"
    );
    assert!(
        at[41].entry.group.is_none(),
        "a blob above 128 KiB is sealed alone"
    );
    assert_eq!(
        at[0].entry.group.map(|g| g.start),
        at[1].entry.group.map(|g| g.start)
    );
    let mut by_pack: HashMap<PackId, Vec<_>> = HashMap::new();
    for a in &at {
        by_pack.entry(a.pack).or_default().push(a.entry);
    }
    let mut read = HashMap::new();
    for (pack, entries) in by_pack {
        crate::fetch::packs::for_each_blob(&repo, &pack, entries, 1 << 20, |entry, plain| {
            read.insert(entry.id, plain?);
            Ok(())
        })
        .expect("read");
    }
    for (id, data) in ids.iter().zip(&blobs) {
        assert_eq!(read.get(id), Some(data), "{id}");
        assert_eq!(
            &repo
                .read_blob(&index.get(id).expect("indexed"))
                .expect("read"),
            data
        );
    }
}

#[test]
fn a_repository_without_groups_seals_every_blob_alone() {
    // A config written before solid groups: its writers keep to what older builds read.
    let dir = tempfile::tempdir().expect("temp dir");
    let params = Params {
        pack_size: 256 << 10,
        groups: None,
        ..Params::default()
    };
    let repo = repository_of(dir.path(), params);
    let blobs: Vec<Vec<u8>> = (0..10).map(blob).collect();
    let ids = store_all(&repo, &blobs);
    let index = repo.load_index().expect("index");
    for (id, data) in ids.iter().zip(&blobs) {
        let at = index.get(id).expect("indexed");
        assert_eq!(at.entry.group, None, "{id}");
        assert_eq!(&repo.read_blob(&at).expect("read"), data);
    }
}

#[test]
fn a_pack_lists_at_most_max_pack_blobs_however_small_they_are() {
    // Tiny distinct files cost their groups a few bytes each: a pack is shipped at its bound of
    // blobs, not only at its size, so its header stays far below what readers accept.
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = repository_of(dir.path(), Params::default());
    let index = Arc::new(repo.load_index().expect("index"));
    let packer = Packer::new(repo.clone(), index, sealing(0, 0), false);
    let count = (MAX_PACK_BLOBS + 20_000) as u64;
    let ids: Vec<BlobId> = (0..count)
        .map(|i| packer.add(BlobKind::Data, &i.to_le_bytes()).expect("add"))
        .collect();
    packer.finish().expect("finish");
    let index = repo.load_index().expect("index");
    let mut per_pack: HashMap<PackId, usize> = HashMap::new();
    for id in &ids {
        *per_pack
            .entry(index.get(id).expect("indexed").pack)
            .or_default() += 1;
    }
    assert!(per_pack.len() >= 2, "{per_pack:?}");
    assert!(
        per_pack
            .values()
            .all(|&n| n <= MAX_PACK_BLOBS + crate::ingest::groups::GROUP_MEMBERS_MAX),
        "{per_pack:?}"
    );
    for i in [0, count / 2, count - 1] {
        let at = index.get(&ids[i as usize]).expect("indexed");
        assert_eq!(repo.read_blob(&at).expect("read"), i.to_le_bytes());
    }
}

#[test]
fn an_entry_lying_about_its_length_fails_alone_in_its_read_window() {
    // A key holder's crafted index: a second, shorter entry at a blob's offset, listed after
    // it. The blob is delivered whole; only the liar fails.
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = repository(dir.path());
    let ids = store_all(&repo, &[blob(1)]);
    let at = repo
        .load_index()
        .expect("index")
        .get(&ids[0])
        .expect("indexed");
    let liar = PackEntry {
        id: BlobId([0xff; 32]),
        sealed_len: at.entry.sealed_len / 2,
        ..at.entry
    };
    let mut opened = HashMap::new();
    crate::fetch::packs::for_each_blob(&repo, &at.pack, vec![at.entry, liar], 1 << 20, |e, p| {
        opened.insert(e.id, p.is_ok());
        Ok(())
    })
    .expect("the window is read");
    assert_eq!(opened.get(&ids[0]), Some(&true));
    assert_eq!(opened.get(&liar.id), Some(&false));
}

#[test]
fn a_data_pack_is_filled_and_finished_in_the_buffer_it_reserved() {
    let key = MasterKey::new(crate::repo::crypto::MasterSecrets::generate());
    let params = Params {
        pack_size: 256 << 10,
        chunk_max: 2 << 20,
        ..Params::default()
    };
    let reserved = empty_pack(BlobKind::Data, &params)
        .finish(&key)
        .bytes
        .capacity();
    let mut builder = empty_pack(BlobKind::Data, &params);
    let add = |builder: &mut PackBuilder, data: &[u8]| {
        let (id, witness) = Witness::name(data, |p| key.blob_id(p).0);
        let sealed = seal_blob(
            &key,
            BlobId(id),
            BlobKind::Data,
            data,
            Compression::level(1),
        );
        builder.add(&sealed, witness);
    };
    // Just short of full, then the largest blob there can be (incompressible): the most a
    // pack ever holds.
    let mut i = 0;
    while builder.len() + 4096 < params.pack_size as usize {
        add(&mut builder, &blob(i)[..1024]);
        i += 1;
    }
    let largest: Vec<u8> = (0..params.chunk_max / 4096)
        .flat_map(|n| blob(n)[..4096].to_vec())
        .collect();
    add(&mut builder, &largest);
    assert!(builder.is_full(params.pack_size as usize));
    let pack = builder.finish(&key);
    assert!(pack.bytes.len() > (params.pack_size + params.chunk_max) as usize);
    assert_eq!(
        pack.bytes.capacity(),
        reserved,
        "the pack outgrew its buffer"
    );
}
