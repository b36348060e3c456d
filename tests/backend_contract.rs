//! The contract every storage backend keeps, run against each one (issue 15 adds S3 to the
//! list): whole and ranged reads, a range past the end an error and never a short read, atomic
//! replacing puts, create-if-absent that exactly one of many racing writers wins, listings by
//! directory with sizes, idempotent deletes, and "not found" as its own error. The S3 backend
//! runs it against a real server (s3s-fs), with and without a prefix.

use cairn::Error;
use cairn::backend::Backend;
use cairn::backend::faulty::{FaultPlan, FaultyBackend};
use cairn::backend::local::LocalBackend;
use cairn::backend::retry::RetryingBackend;
use cairn::backend::s3::{S3Backend, S3Credentials, S3Location, S3Timeouts};
use std::sync::Arc;

mod common;
use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether the store decides a conditional put atomically. AWS S3 and MinIO do; s3s-fs, the
/// test server, checks `If-None-Match` and then writes, so racing creators can both succeed
/// there and only the sequential half of the create-if-absent contract is asserted.
#[derive(Clone, Copy, PartialEq)]
enum Conditional {
    Atomic,
    Sequential,
}

fn contract(backend: Arc<dyn Backend>) {
    contract_with(backend, Conditional::Atomic)
}

fn contract_with(backend: Arc<dyn Backend>, conditional: Conditional) {
    // Not found is its own error, for every kind of access.
    assert!(matches!(
        backend.get("data/ab/none", None),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        backend.stat("data/ab/none"),
        Err(Error::NotFound(_))
    ));
    assert!(backend.list("snapshots/").unwrap().is_empty());
    backend.delete("data/ab/none").unwrap();

    // Whole and ranged reads.
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    backend.put("data/ab/pack", &bytes).unwrap();
    assert_eq!(backend.get("data/ab/pack", None).unwrap(), bytes);
    assert_eq!(
        backend.get("data/ab/pack", Some(100..300)).unwrap(),
        bytes[100..300]
    );
    assert_eq!(
        backend.get("data/ab/pack", Some(9_990..10_000)).unwrap(),
        bytes[9_990..]
    );
    let mut buf = vec![1, 2, 3];
    backend.get_into("data/ab/pack", 5..9, &mut buf).unwrap();
    assert_eq!(buf, bytes[5..9]);
    assert!(
        backend.get("data/ab/pack", Some(9_990..10_001)).is_err(),
        "a short read"
    );
    assert_eq!(backend.stat("data/ab/pack").unwrap(), 10_000);
    assert!(matches!(
        backend.get_bounded("data/ab/pack", 9_999),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(backend.get_bounded("data/ab/pack", 10_000).unwrap(), bytes);

    // A put replaces the whole object.
    backend.put("index/seg", b"first version, longer").unwrap();
    backend.put("index/seg", b"second").unwrap();
    assert_eq!(backend.get("index/seg", None).unwrap(), b"second");

    // Create-if-absent: a second creator loses and the first one's bytes stay.
    assert!(backend.put_if_absent("snapshots/first", b"one").unwrap());
    assert!(!backend.put_if_absent("snapshots/first", b"two").unwrap());
    assert_eq!(backend.get("snapshots/first", None).unwrap(), b"one");
    backend.delete("snapshots/first").unwrap();
    if conditional == Conditional::Sequential {
        backend.put("snapshots/s", &[0; 64]).unwrap();
        return contract_rest(backend);
    }
    // Of eight racing writers exactly one wins, and its bytes stay.
    let won = Arc::new(AtomicUsize::new(0));
    let racers: Vec<_> = (0..8u8)
        .map(|i| {
            let (backend, won) = (backend.clone(), won.clone());
            std::thread::spawn(move || {
                if backend.put_if_absent("snapshots/s", &[i; 64]).unwrap() {
                    won.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for racer in racers {
        racer.join().unwrap();
    }
    assert_eq!(won.load(Ordering::SeqCst), 1);
    let kept = backend.get("snapshots/s", None).unwrap();
    assert!(kept.len() == 64 && kept.iter().all(|b| *b == kept[0]));
    contract_rest(backend)
}

fn contract_rest(backend: Arc<dyn Backend>) {
    // Listings: by directory, sorted, with sizes; nothing of other directories.
    backend.put("data/cd/other", b"12345").unwrap();
    let listed = backend.list("data/").unwrap();
    let names: Vec<(&str, u64)> = listed.iter().map(|o| (o.name.as_str(), o.size)).collect();
    assert_eq!(names, [("data/ab/pack", 10_000), ("data/cd/other", 5)]);
    assert_eq!(backend.list("snapshots/").unwrap().len(), 1);

    // Deletes are idempotent and final.
    backend.delete("data/ab/pack").unwrap();
    backend.delete("data/ab/pack").unwrap();
    assert!(matches!(
        backend.get("data/ab/pack", None),
        Err(Error::NotFound(_))
    ));
    assert_eq!(backend.list("data/").unwrap().len(), 1);
}

#[test]
fn the_local_backend_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(Arc::new(LocalBackend::new(dir.path())));
}

#[test]
fn the_retry_and_fault_layers_keep_it_too() {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(LocalBackend::new(dir.path()));
    contract(Arc::new(RetryingBackend::new(local, 3)));
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(LocalBackend::new(dir.path()));
    contract(Arc::new(FaultyBackend::new(local, FaultPlan::default())));
}

fn s3_backend(server: &S3Server, prefix: &str) -> Arc<dyn Backend> {
    let location = server.location(prefix);
    let at = S3Location::parse(location.strip_prefix("s3:").unwrap()).unwrap();
    let credentials = S3Credentials {
        keys: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
        region: "us-east-1".into(),
    };
    Arc::new(S3Backend::new(at, credentials, S3Timeouts::configured()).unwrap())
}

#[test]
fn the_s3_backend_keeps_the_contract() {
    let server = S3Server::start();
    contract_with(s3_backend(&server, "one"), Conditional::Sequential);
    // Under another prefix of the same bucket: nothing of the first is seen.
    let other = s3_backend(&server, "two/deeper");
    contract_with(other.clone(), Conditional::Sequential);
    assert_eq!(other.list("index/").unwrap().len(), 1);
    let retrying = Arc::new(RetryingBackend::new(s3_backend(&server, "three"), 3));
    contract_with(retrying, Conditional::Sequential);
}

#[test]
fn s3_with_wrong_credentials_is_a_permanent_error_not_a_retry_loop() {
    let server = S3Server::start();
    let at = S3Location::parse(server.location("x").strip_prefix("s3:").unwrap()).unwrap();
    let credentials = S3Credentials {
        keys: Some((ACCESS_KEY.into(), "wrong".into())),
        region: "us-east-1".into(),
    };
    let backend = S3Backend::new(at, credentials, S3Timeouts::configured()).unwrap();
    match backend.put("config", b"x") {
        Err(error @ Error::Storage { .. }) => {
            assert!(!cairn::backend::retry::is_transient(&error), "{error}")
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
}
