//! Session, claim and garbage files: the plaintext decoders prune and every writer run on
//! files any key holder can write (both session versions, garbage files, recorded sessions).
#![no_main]
use cairn::repo::garbage::GarbageFile;
use cairn::repo::ids::SessionId;
use cairn::repo::session::SessionFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(session) = SessionFile::from_bytes(data, "fuzz") {
        // What prune computes from a session it read must not panic on any values.
        let _ = session.liveness(i64::MAX, i64::MAX);
        let _ = session.liveness(i64::MIN, 0);
        let _ = session.describe_expiry(0);
        let _ = session.describe();
    }
    let _ = cairn::repo::serial::decode::<GarbageFile>(data, "fuzz");
    let _ = cairn::repo::serial::decode::<Vec<SessionId>>(data, "fuzz");
});
