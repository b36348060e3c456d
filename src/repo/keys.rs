//! Key files: the master secrets sealed under a key derived from a password with argon2id.
//! Several key files may unlock the same master key, so passwords can be added, changed and
//! removed without re-encrypting anything else.

use crate::error::{Error, Result};
use crate::repo::crypto::{MasterSecrets, fill_random, open_with_key, seal_with_key};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

const KEY_AAD: &[u8] = b"cairn key file";
/// The most argon2 memory `init` and `key add` may choose, in MiB. A key file asking for more
/// is refused rather than obeyed: anyone who can write a key file could otherwise make every
/// open of the repository allocate gigabytes.
pub const MAX_KDF_MEMORY_MIB: u32 = 1024;
const MAX_KDF_MEMORY_KIB: u32 = MAX_KDF_MEMORY_MIB * 1024;
/// The lanes `init` always chooses; a key file asking for more is refused.
const MAX_KDF_PARALLELISM: u32 = 1;
/// Largest key file read: a few hundred bytes of JSON are all it ever holds.
pub const MAX_KEY_FILE_LEN: u64 = 64 << 10;
/// A key file asking for more argon2 passes than this is refused.
const MAX_KDF_ITERATIONS: u32 = 64;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// Picks the number of passes that makes one derivation take about `target` with
    /// `memory_mib` of memory (at least one pass).
    pub fn calibrate(memory_mib: u32, target: Duration) -> Result<KdfParams> {
        let one_pass = KdfParams {
            memory_kib: memory_mib.max(1) * 1024,
            iterations: 1,
            parallelism: 1,
        };
        let start = Instant::now();
        derive(&one_pass, b"calibration", &[0u8; 16])?;
        let per_pass = start.elapsed().max(Duration::from_micros(1));
        let passes = (target.as_secs_f64() / per_pass.as_secs_f64())
            .round()
            .clamp(1.0, MAX_KDF_ITERATIONS as f64);
        Ok(KdfParams {
            iterations: passes as u32,
            ..one_pass
        })
    }
}

fn derive(params: &KdfParams, password: &[u8], salt: &[u8]) -> Result<[u8; 32]> {
    if params.memory_kib > MAX_KDF_MEMORY_KIB
        || params.iterations > MAX_KDF_ITERATIONS
        || params.parallelism > MAX_KDF_PARALLELISM
    {
        return Err(Error::Invalid(format!(
            "key derivation parameters {params:?} exceed the limits"
        )));
    }
    let argon_params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| Error::Invalid(format!("key derivation parameters: {e}")))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params)
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| Error::Invalid(format!("key derivation: {e}")))?;
    Ok(out)
}

/// One key file, as stored under `keys/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// When the key was added, RFC 3339.
    pub created: String,
    /// Host the key was added on.
    pub hostname: String,
    /// User who added it.
    pub username: String,
    /// Always `argon2id`.
    pub kdf: String,
    /// argon2id costs.
    #[serde(flatten)]
    pub params: KdfParams,
    /// Salt, hex.
    pub salt: String,
    /// The sealed master secrets, hex.
    pub master: String,
}

impl KeyFile {
    /// Seals `secrets` under `password`.
    pub fn create(
        secrets: &MasterSecrets,
        password: &[u8],
        params: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<KeyFile> {
        let mut salt = [0u8; 16];
        fill_random(&mut salt);
        let wrapping = derive(&params, password, &salt)?;
        let plain = serde_json::to_vec(secrets).expect("secrets serialize");
        Ok(KeyFile {
            created: chrono::Local::now().to_rfc3339(),
            hostname: hostname.into(),
            username: username.into(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            master: hex::encode(seal_with_key(&wrapping, &plain, KEY_AAD)),
        })
    }

    /// Parses a stored key file; `name` is used in errors.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<KeyFile> {
        let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| Error::corrupt(name, e))?;
        if file.kdf != "argon2id" {
            return Err(Error::corrupt(
                name,
                format!("unknown key derivation {:?}", file.kdf),
            ));
        }
        Ok(file)
    }

    /// The master secrets, if `password` is this key's; `Ok(None)` for a wrong password.
    pub fn unlock(&self, name: &str, password: &[u8]) -> Result<Option<MasterSecrets>> {
        let salt =
            hex::decode(&self.salt).map_err(|e| Error::corrupt(name, format!("salt: {e}")))?;
        let sealed =
            hex::decode(&self.master).map_err(|e| Error::corrupt(name, format!("master: {e}")))?;
        let wrapping =
            derive(&self.params, password, &salt).map_err(|e| Error::corrupt(name, e))?;
        match open_with_key(&wrapping, &sealed, KEY_AAD) {
            Ok(plain) => serde_json::from_slice(&plain)
                .map(Some)
                .map_err(|e| Error::corrupt(name, e)),
            Err(_) => Ok(None),
        }
    }

    /// The JSON bytes to store.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn right_password_unlocks_wrong_one_does_not() {
        let secrets = MasterSecrets::generate();
        let file = KeyFile::create(&secrets, b"pw", FAST, "h", "u").unwrap();
        let parsed = KeyFile::parse("k", &file.to_json()).unwrap();
        assert_eq!(parsed.unlock("k", b"pw").unwrap().unwrap().mac, secrets.mac);
        assert!(parsed.unlock("k", b"nope").unwrap().is_none());
    }

    #[test]
    fn key_file_that_is_not_json_is_corrupt() {
        assert!(matches!(
            KeyFile::parse("keys/x", b"\x00garbage"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn absurd_kdf_parameters_are_refused_not_allocated() {
        let secrets = MasterSecrets::generate();
        let mut file = KeyFile::create(&secrets, b"pw", FAST, "h", "u").unwrap();
        file.params.memory_kib = u32::MAX;
        assert!(file.unlock("k", b"pw").is_err());
    }

    #[test]
    fn kdf_parameters_init_could_not_have_chosen_are_refused() {
        let secrets = MasterSecrets::generate();
        let file = KeyFile::create(&secrets, b"pw", FAST, "h", "u").unwrap();
        let refused = |file: &KeyFile| {
            matches!(file.unlock("k", b"pw"),
                     Err(Error::Corrupt { reason, .. }) if reason.contains("exceed the limits"))
        };
        let mut four_gib = file.clone();
        four_gib.params.memory_kib = 4 << 20;
        assert!(refused(&four_gib));
        let mut lanes = file.clone();
        lanes.params.parallelism = 2;
        assert!(refused(&lanes));
        let mut past_the_bound = file;
        past_the_bound.params.memory_kib = MAX_KDF_MEMORY_KIB + 1;
        assert!(refused(&past_the_bound));
    }
}
