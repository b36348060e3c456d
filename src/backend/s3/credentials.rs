//! Who the S3 backend is to the store and which region it signs for, found as the AWS tools
//! find them. The keys are left to opendal's chain; the region is read here, including the
//! profile's `region` in the AWS config file, which opendal does not read.
//!
//! The config file is the user's, but `AWS_CONFIG_FILE` may name anything: only a regular file
//! of at most [`MAX_CONFIG_FILE`] bytes is read, and a file that does not parse or lacks the
//! named profile is said in a warning, never silently taken as "no region".

use std::io::Read;
use std::path::{Path, PathBuf};

/// Who the backend is to the store, and where. Its `Debug` leaves the secret out, so no log
/// line can carry it.
#[derive(Clone)]
pub struct S3Credentials {
    /// Access key id and secret; `None` leaves them to opendal's own lookup: the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then the profile
    /// (`AWS_PROFILE`) in `~/.aws/credentials` and `~/.aws/config`, SSO, web identity, ECS and
    /// EC2 roles.
    pub keys: Option<(String, String)>,
    /// The region requests are signed for, unless the location's host names one.
    pub region: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.keys.as_ref().map(|(id, _)| id))
            .field("secret_access_key", &self.keys.as_ref().map(|_| "(hidden)"))
            .field("region", &self.region)
            .finish()
    }
}

impl S3Credentials {
    /// What the AWS tools use: the keys as opendal's chain finds them (see
    /// [`S3Credentials::keys`]), and the region from `AWS_REGION`, else `AWS_DEFAULT_REGION`,
    /// else the profile's `region` in the AWS config file, else `us-east-1`.
    pub fn from_env() -> S3Credentials {
        S3Credentials {
            keys: None,
            region: env_var("AWS_REGION")
                .or_else(|| env_var("AWS_DEFAULT_REGION"))
                .or_else(profile_region)
                .unwrap_or_else(|| "us-east-1".to_string()),
        }
    }
}

/// Most bytes of an AWS config file read: a real one is a few KiB; `AWS_CONFIG_FILE` naming
/// something far larger is a mistake, not a config to load into memory.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// A set, non-empty environment variable.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The `region` of the profile the AWS tools use (`AWS_PROFILE`, else `default`) in their
/// config file (`AWS_CONFIG_FILE`, else `~/.aws/config`). opendal reads the profile's keys
/// there but not its region.
fn profile_region() -> Option<String> {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    let file = match env_var("AWS_CONFIG_FILE") {
        Some(path) => match path.strip_prefix("~/") {
            Some(rest) => home()?.join(rest),
            None => PathBuf::from(path),
        },
        None => home()?.join(".aws/config"),
    };
    region_in_config(&file, env_var("AWS_PROFILE").as_deref())
}

/// The `region` of `profile` (`None`: `default`) in the AWS config file at `file`. A missing
/// file is no region, quietly (most machines have none); one that is not a regular file, is
/// larger than [`MAX_CONFIG_FILE`], does not parse, or lacks a profile that was named, is no
/// region with a warning.
fn region_in_config(file: &Path, profile: Option<&str>) -> Option<String> {
    let text = read_config(file)?;
    let config = match ini::Ini::load_from_str(&text) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!("{}: not an AWS config file ({e}); ignored", file.display());
            return None;
        }
    };
    let section = match profile {
        None | Some("default") => "default".to_string(),
        Some(name) => format!("profile {name}"),
    };
    let Some(properties) = config.section(Some(section.as_str())) else {
        if let Some(name) = profile {
            tracing::warn!(
                "{}: no section [{section}] for AWS_PROFILE {name}; its region is not used",
                file.display()
            );
        }
        return None;
    };
    properties
        .get("region")
        .map(str::trim)
        .filter(|region| !region.is_empty())
        .map(str::to_string)
}

/// The text of the config file at `file`, if it is a regular file of at most
/// [`MAX_CONFIG_FILE`] bytes. Opened without blocking, so a FIFO named there cannot hang the
/// command, and checked once open, so nothing swapped in after a check is read.
fn read_config(file: &Path) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let warn = |what: &str| {
        tracing::warn!("{}: {what}; ignored", file.display());
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file);
    let handle = match opened {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn(&e.to_string());
            return None;
        }
    };
    if !handle.metadata().is_ok_and(|meta| meta.is_file()) {
        warn("not a regular file");
        return None;
    }
    let mut text = String::new();
    if let Err(e) = handle.take(MAX_CONFIG_FILE + 1).read_to_string(&mut text) {
        warn(&e.to_string());
        return None;
    }
    if text.len() as u64 > MAX_CONFIG_FILE {
        warn(&format!("larger than {} KiB", MAX_CONFIG_FILE >> 10));
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    #[test]
    fn the_named_profiles_region_is_read_and_a_missing_one_is_none() {
        let (_dir, file) =
            config(b"[default]\nregion = eu-west-1\n[profile work]\nregion = ap-south-1\n");
        assert_eq!(region_in_config(&file, None).as_deref(), Some("eu-west-1"));
        assert_eq!(
            region_in_config(&file, Some("work")).as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(region_in_config(&file, Some("nobody")), None);
        let missing = file.with_file_name("absent");
        assert_eq!(region_in_config(&missing, None), None);
    }

    #[test]
    fn a_config_file_that_is_not_a_small_regular_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(read_config(&fifo), None, "a FIFO neither hangs nor reads");
        assert_eq!(read_config(Path::new("/dev/zero")), None);
        assert_eq!(read_config(dir.path()), None);
        let mut large = b"[default]\nregion = eu-west-1\n".to_vec();
        large.resize(MAX_CONFIG_FILE as usize + 1, b'#');
        let (_dir, file) = config(&large);
        assert_eq!(region_in_config(&file, None), None);
        large.truncate(MAX_CONFIG_FILE as usize);
        let (_dir, file) = config(&large);
        assert_eq!(region_in_config(&file, None).as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn a_config_file_that_does_not_parse_gives_no_region() {
        let (_dir, file) = config(b"[default\nregion = eu-west-1\n");
        assert_eq!(region_in_config(&file, None), None);
    }
}
