//! The repository config: plaintext JSON holding the format version, the repository id and the
//! parameters fixed at `init` (chunk sizes, pack size, compression level). It carries an HMAC
//! under `mac`, checked on open, so nobody without the key can change how data is chunked.

use crate::error::{Error, Result};
use crate::repo::crypto::MasterKey;
use serde::{Deserialize, Serialize};

/// Largest `config` file read: a few hundred bytes of JSON are all it ever holds.
pub const MAX_CONFIG_LEN: u64 = 64 << 10;

/// The repository format this build writes and reads: 1; 2 for a repository whose small blobs
/// are compressed with dictionaries; 3 for one whose small blobs are sealed in solid groups
/// (pack headers and index files of format version 2). A build older than a feature refuses
/// such a config at open — the field it does not know changes the MAC it computes — instead of
/// failing on every such blob, or taking index files it cannot read for damage and setting
/// them aside (after which its prune would count their packs as garbage).
pub const FORMAT_VERSION: u32 = 3;

/// Parameters fixed for the life of a repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Smallest chunk (fastcdc `min_size`); smaller files are one blob.
    pub chunk_min: u32,
    /// Average chunk.
    pub chunk_avg: u32,
    /// Largest chunk.
    pub chunk_max: u32,
    /// Target size of data packs.
    pub pack_size: u32,
    /// Target size of tree packs (small, so they can be cached whole).
    pub tree_pack_size: u32,
    /// zstd level.
    pub compression: i32,
    /// Directories whose tree blob would exceed this are split into pieces.
    pub tree_split_size: u32,
    /// How many times a transient store error is retried (with backoff) before it counts.
    /// Absent in configs written before it existed, which then mean [`DEFAULT_RETRIES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Whether writers store a parity object beside every pack ([`crate::repo::parity`]).
    /// Absent in configs written before parity existed, which then mean no (`repair parity`
    /// adds it to such a repository's packs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity: Option<bool>,
    /// Whether writers compress small data blobs with repository dictionaries
    /// ([`crate::repo::dictionary`]). Absent in configs written before dictionaries existed,
    /// which then mean no: builds older than them cannot read such blobs.
    /// Written only when true, so a config made with `--dictionaries off` is byte for byte
    /// what builds before dictionaries write and read.
    #[serde(default, skip_serializing_if = "not_true")]
    pub dictionaries: Option<bool>,
    /// Whether writers seal small data blobs in solid groups ([`crate::ingest::groups`]).
    /// Absent in configs written before groups existed, which then mean no: writers keep
    /// sealing every blob alone and writing pack headers and index files of format version
    /// 1, so builds older than groups go on reading such a repository.
    #[serde(default, skip_serializing_if = "not_true")]
    pub groups: Option<bool>,
}

fn not_true(value: &Option<bool>) -> bool {
    *value != Some(true)
}

/// Retries of a transient store error when the config names none.
pub const DEFAULT_RETRIES: u32 = 5;

/// The zstd level of a new repository: the fastest that keeps a first backup of a source tree
/// under 90 % of restic's repository. Measured on linux/ (first backup, 2 cores, small
/// files in solid groups of 896 KiB, interleaved rounds, medians): level 1 (with a larger hash
/// table, [`crate::repo::blob`]) 234 MiB with 9.4-10.6 s of CPU; level 2 230 MiB with
/// 7-10 % more CPU; level 3 218 MiB with 8 % more again (restic: 264 MiB). random.bin is
/// stored uncompressed at any (its probe compresses nothing).
pub const DEFAULT_COMPRESSION: i32 = 1;

impl Default for Params {
    fn default() -> Self {
        Params {
            chunk_min: 512 << 10,
            chunk_avg: 1 << 20,
            chunk_max: 8 << 20,
            pack_size: 16 << 20,
            tree_pack_size: 4 << 20,
            compression: DEFAULT_COMPRESSION,
            tree_split_size: 4 << 20,
            retries: Some(DEFAULT_RETRIES),
            parity: Some(true),
            dictionaries: None,
            groups: Some(true),
        }
    }
}

impl Params {
    /// The largest pack a writer with these parameters can store, generously: a pack is closed
    /// once it reaches its target size, so it holds at most that plus one blob (a chunk or a
    /// tree piece, sealed) and its header. A listed pack larger than twice this was not written
    /// by cairn, and adoption does not spend a read on it.
    pub fn largest_pack(&self) -> u64 {
        let target = u64::from(self.pack_size.max(self.tree_pack_size));
        let blob = u64::from(self.chunk_max.max(self.tree_split_size));
        2 * (target + blob) + (1 << 20)
    }

    /// Whether packs get parity.
    pub fn parity(&self) -> bool {
        self.parity.unwrap_or(false)
    }

    /// Whether small data blobs are compressed with repository dictionaries.
    pub fn dictionaries(&self) -> bool {
        self.dictionaries.unwrap_or(false)
    }

    /// Whether small data blobs are sealed in solid groups.
    pub fn groups(&self) -> bool {
        self.groups.unwrap_or(false)
    }

    /// Retries of a transient store error.
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(DEFAULT_RETRIES)
    }

    /// Rejects parameters the chunker or pack format cannot honour.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let even = |v: u32| v.is_multiple_of(2);
        let chunks_ok = (64..=1 << 20).contains(&self.chunk_min)
            && (256..=4 << 20).contains(&self.chunk_avg)
            && (1024..=16 << 20).contains(&self.chunk_max)
            && self.chunk_min <= self.chunk_avg
            && self.chunk_avg <= self.chunk_max
            && even(self.chunk_min)
            && even(self.chunk_avg)
            && even(self.chunk_max);
        if !chunks_ok {
            return Err(format!(
                "chunk sizes {}/{}/{} must be even, ordered, and within fastcdc's bounds",
                self.chunk_min, self.chunk_avg, self.chunk_max
            ));
        }
        if !(64 << 10..=1 << 30).contains(&self.pack_size)
            || !(64 << 10..=1 << 30).contains(&self.tree_pack_size)
        {
            return Err("pack sizes must be between 64 KiB and 1 GiB".into());
        }
        if !(1..=22).contains(&self.compression) {
            return Err(format!(
                "compression level {} is outside zstd's 1..=22",
                self.compression
            ));
        }
        if self.retries() > 100 {
            return Err("at most 100 retries".into());
        }
        if !(4096..=16 << 20).contains(&self.tree_split_size) {
            return Err("tree split size must be between 4 KiB and 16 MiB".into());
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    version: u32,
    id: String,
    created: String,
    #[serde(flatten)]
    params: Params,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    body: Body,
    mac: String,
}

/// A parsed, authenticated config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Random repository id, 64 hex digits.
    pub id: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Parameters fixed at init.
    pub params: Params,
}

impl Config {
    /// A new config with a random id.
    pub fn new(params: Params) -> Config {
        let mut id = [0u8; 32];
        crate::repo::crypto::fill_random(&mut id);
        Config {
            id: hex::encode(id),
            created: chrono::Local::now().to_rfc3339(),
            params,
        }
    }

    /// The JSON file with its MAC.
    pub fn to_json(&self, key: &MasterKey) -> Vec<u8> {
        let body = self.body();
        let mac = hex::encode(key.mac_of(&serde_json::to_vec(&body).expect("config serializes")));
        serde_json::to_vec_pretty(&Stored { body, mac }).expect("config serializes")
    }

    /// The parameters the stored config states, without the key to authenticate them: for
    /// `scrub`, which runs without the password and uses them only to bound what it reads (an
    /// altered config can make it refuse a pack, never accept a wrong byte).
    pub fn unauthenticated_params(bytes: &[u8]) -> Result<Params> {
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt("config", e))?;
        stored
            .body
            .params
            .validate()
            .map_err(|e| Error::corrupt("config", e))?;
        Ok(stored.body.params)
    }

    /// Parses and authenticates the stored config.
    pub fn from_json(key: &MasterKey, bytes: &[u8]) -> Result<Config> {
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt("config", e))?;
        let expected =
            hex::encode(key.mac_of(&serde_json::to_vec(&stored.body).expect("config serializes")));
        // A newer build's config has fields this one drops, so its MAC fails too: the version
        // (unauthenticated, and only ever a reason to refuse) says which of the two it is.
        if stored.body.version > FORMAT_VERSION {
            return Err(Error::corrupt(
                "config",
                format!(
                    "format version {} is newer than this build of cairn reads ({FORMAT_VERSION}): \
                     upgrade cairn",
                    stored.body.version
                ),
            ));
        }
        if expected != stored.mac {
            return Err(Error::corrupt(
                "config",
                "MAC does not match (altered, or from another repository)",
            ));
        }
        if stored.body.version == 0 {
            return Err(Error::corrupt("config", "unsupported format version 0"));
        }
        stored
            .body
            .params
            .validate()
            .map_err(|e| Error::corrupt("config", e))?;
        let Body {
            id,
            created,
            params,
            ..
        } = stored.body;
        Ok(Config {
            id,
            created,
            params,
        })
    }

    fn body(&self) -> Body {
        Body {
            version: if self.params.groups() {
                3
            } else if self.params.dictionaries() {
                2
            } else {
                1
            },
            id: self.id.clone(),
            created: self.created.clone(),
            params: self.params.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterSecrets;

    #[test]
    fn config_round_trips_and_detects_tampering() {
        let key = MasterKey::new(MasterSecrets::generate());
        let config = Config::new(Params::default());
        let json = config.to_json(&key);
        assert_eq!(Config::from_json(&key, &json).unwrap(), config);
        let tampered = String::from_utf8(json).unwrap().replace(
            &format!("\"compression\": {DEFAULT_COMPRESSION}"),
            "\"compression\": 4",
        );
        assert!(Config::from_json(&key, tampered.as_bytes()).is_err());
        let other = MasterKey::new(MasterSecrets::generate());
        assert!(Config::from_json(&other, &config.to_json(&key)).is_err());
        assert!(Config::from_json(&key, b"{not json").is_err());
    }

    #[test]
    fn a_config_of_a_newer_format_asks_for_a_newer_cairn() {
        // As a later build would write it: a higher version and a field this one does not know.
        let key = MasterKey::new(MasterSecrets::generate());
        let json = Config::new(Params::default()).to_json(&key);
        let newer = String::from_utf8(json).unwrap().replacen(
            &format!("\"version\": {FORMAT_VERSION}"),
            &format!("\"version\": {},\n  \"future\": true", FORMAT_VERSION + 1),
            1,
        );
        let err = Config::from_json(&key, newer.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("upgrade cairn"), "{err}");
    }

    #[test]
    fn the_format_version_says_what_the_repository_holds() {
        let key = MasterKey::new(MasterSecrets::generate());
        let stored = |params: Params| -> serde_json::Value {
            let json = Config::new(params).to_json(&key);
            assert!(Config::from_json(&key, &json).is_ok());
            serde_json::from_slice(&json).unwrap()
        };
        // Neither groups nor dictionaries: version 1, without either field, as older builds
        // write and read it.
        let old = stored(Params {
            groups: None,
            dictionaries: None,
            ..Params::default()
        });
        assert_eq!(old["version"], 1);
        assert!(old.get("groups").is_none() && old.get("dictionaries").is_none());
        let dictionaries = Params {
            groups: None,
            dictionaries: Some(true),
            ..Params::default()
        };
        assert_eq!(stored(dictionaries)["version"], 2);
        assert_eq!(stored(Params::default())["version"], 3);
        let both = Params {
            dictionaries: Some(true),
            ..Params::default()
        };
        assert_eq!(stored(both)["version"], 3);
    }
}
