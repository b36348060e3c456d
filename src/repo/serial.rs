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
    let mut out = vec![CURRENT_VERSION];
    // postcard only fails on writer errors, and a Vec writer cannot fail.
    postcard::to_io(value, &mut out).expect("serializing into a Vec cannot fail");
    out
}

/// Parses bytes written by [`encode`]; `what` names the object in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    match bytes.split_first() {
        Some((&CURRENT_VERSION, body)) => {
            let (value, rest) =
                postcard::take_from_bytes(body).map_err(|e| Error::corrupt(what, e))?;
            if !rest.is_empty() {
                return Err(Error::corrupt(
                    what,
                    format!("{} trailing bytes", rest.len()),
                ));
            }
            Ok(value)
        }
        Some((version, _)) => Err(Error::corrupt(
            what,
            format!("unknown format version {version}"),
        )),
        None => Err(Error::corrupt(what, "empty")),
    }
}
