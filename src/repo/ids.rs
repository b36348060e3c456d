//! Typed 32-byte identifiers. A blob id is a keyed hash of plaintext; pack, index, snapshot and
//! key ids are the SHA-256 of the stored file; session and garbage ids are random (those files
//! are rewritten in place). Distinct types keep one from being passed as the
//! other.

use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::digest::sha256;

/// An id string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a 64-digit hex id: {0:?}")]
pub struct IdParseError(pub String);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The full id as 64 lowercase hex digits, as used in file names.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits: what users see and type.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Parses 64 hex digits.
            pub fn from_hex(text: &str) -> Result<Self, IdParseError> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(text, &mut bytes).map_err(|_| IdParseError(text.to_string()))?;
                Ok(Self(bytes))
            }
        }

        // Raw bytes in the binary repository format, hex in JSON meant for people and scripts.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() { s.serialize_str(&self.to_hex()) } else { self.0.serialize(s) }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let text = String::deserialize(d)?;
                    Self::from_hex(&text).map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(d).map(Self)
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

id_type!(
    /// HMAC-SHA256 of a blob's plaintext under the repository's `mac` key.
    BlobId
);
id_type!(
    /// SHA-256 of a pack file; its name under `data/`.
    PackId
);
id_type!(
    /// SHA-256 of an index segment file; its name under `index/`.
    IndexId
);
id_type!(
    /// SHA-256 of a snapshot file; its name under `snapshots/`.
    SnapshotId
);
id_type!(
    /// SHA-256 of one sealed copy of a compression dictionary; its name under `dicts/`.
    DictId
);
id_type!(
    /// SHA-256 of a key file; its name under `keys/`.
    KeyId
);
id_type!(
    /// A writer session's random id; its name under `sessions/`.
    SessionId
);
id_type!(
    /// A prune's random id for one garbage file; its name under `garbage/`.
    GarbageId
);

/// What a blob holds. Packs hold one kind only, so tree packs stay small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    /// A chunk of file content.
    Data,
    /// A serialized directory.
    Tree,
}

impl BlobKind {
    /// The byte that binds the kind into a blob's AEAD associated data.
    pub fn tag(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_short_form() {
        let id = BlobId([0xab; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short(), "abababab");
        assert!(BlobId::from_hex("abc").is_err());
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{}\"", id.to_hex())
        );
        assert_eq!(postcard::to_allocvec(&id).unwrap(), [0xab; 32]);
    }
}
