//! Versioned serialization of trees, snapshots, index segments and pack headers: one format
//! version byte, then `postcard`. A later version adds fields under a new byte; readers keep
//! accepting every older byte. Decoding never trusts a length it has not checked: postcard reads
//! from a bounded slice and fails on truncation.

use crate::error::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};

/// The format version written today.
pub const CURRENT_VERSION: u8 = 1;

/// Serializes `value` behind the current version byte.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_version(CURRENT_VERSION, value)
}

/// Serializes `value` behind `version`, for an object whose format moved past the first.
pub fn encode_version<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // postcard only fails on writer errors, and a Vec writer cannot fail.
    postcard::to_io(value, &mut out).expect("serializing into a Vec cannot fail");
    out
}

/// Parses bytes written by [`encode`]; `what` names the object in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    match split_version(bytes, what)? {
        (CURRENT_VERSION, body) => decode_body(body, what),
        (version, _) => Err(unknown_version(version, what)),
    }
}

/// The version byte and the body after it.
pub fn split_version<'a>(bytes: &'a [u8], what: &str) -> Result<(u8, &'a [u8])> {
    bytes
        .split_first()
        .map(|(version, body)| (*version, body))
        .ok_or_else(|| Error::corrupt(what, "empty"))
}

/// Parses a body (the bytes after the version byte), all of it.
pub fn decode_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| Error::corrupt(what, e))?;
    if !rest.is_empty() {
        return Err(Error::corrupt(
            what,
            format!("{} trailing bytes", rest.len()),
        ));
    }
    Ok(value)
}

/// The error for a version byte this build does not know.
pub fn unknown_version(version: u8, what: &str) -> Error {
    Error::corrupt(what, format!("unknown format version {version}"))
}
