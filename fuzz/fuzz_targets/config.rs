//! The config file: JSON parsing, MAC and parameter checks.
#![no_main]
use cairn::repo::config::Config;
use cairn::repo::crypto::{MasterKey, MasterSecrets};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::new(MasterSecrets { enc: [1; 32], mac: [2; 32], gear_seed: 3 });
    let _ = Config::from_json(&key, data);
});
