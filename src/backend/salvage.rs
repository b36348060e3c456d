//! Reading what is still readable of an object whose device has lost some of its sectors. A
//! disk that cannot read a sector answers EIO, not wrong bytes, and a plain read then loses the
//! whole object; read sector by sector instead, the lost ones are known by their positions,
//! which is what a parity needs to rebuild them.

use crate::backend::Backend;
use crate::error::{Error, Result};
use std::ops::Range;

/// What could be read of an object: its bytes, with every lost sector zero-filled, and the
/// numbers of those sectors (ascending, counted from the object's start).
#[derive(Debug, Default)]
pub struct Salvaged {
    /// The object's bytes, zeros where a sector was lost.
    pub bytes: Vec<u8>,
    /// The sectors that could not be read.
    pub lost: Vec<u32>,
}

/// Whether `error` is the device refusing to read (EIO): worth reading around, sector by
/// sector, where any other error ends the read.
pub fn is_unreadable(error: &Error) -> bool {
    matches!(error, Error::Storage { source, .. } if source.raw_os_error() == Some(libc::EIO))
}

/// Reads object `name`, at most `limit` bytes, in one read if it can; if the device fails a
/// read (EIO), again in `sector`-byte pieces aligned to the object's start, zero-filling and
/// listing those that fail — at most `most_lost` of them (what the reader can rebuild: each
/// may cost the device seconds), beyond which the first error is returned. Any other error is
/// returned as it is.
pub fn read_salvaging(
    backend: &dyn Backend,
    name: &str,
    limit: u64,
    sector: u64,
    most_lost: usize,
) -> Result<Salvaged> {
    match backend.get_bounded(name, limit) {
        Ok(bytes) => Ok(Salvaged {
            bytes,
            lost: Vec::new(),
        }),
        Err(e) if is_unreadable(&e) => {
            let size = backend.stat(name)?;
            if size > limit {
                return Err(super::too_large(name, size, limit));
            }
            // Too many lost: the device's first answer. Anything else (the object deleted
            // meanwhile, a short read) as it is.
            read_range_by_sectors(backend, name, 0..size, sector, most_lost)
                .map_err(|inner| if is_unreadable(&inner) { e } else { inner })
        }
        Err(e) => Err(e),
    }
}

/// Reads `range` of object `name` piece by piece, each piece the part of one `sector`-byte
/// sector (aligned to the object's start) that lies in `range`; a piece the device fails (EIO)
/// is zero-filled and its sector listed, and the read stops with that error once more than
/// `most_lost` are. For a reader that met EIO in a larger read.
pub fn read_range_by_sectors(
    backend: &dyn Backend,
    name: &str,
    range: Range<u64>,
    sector: u64,
    most_lost: usize,
) -> Result<Salvaged> {
    let sector = sector.max(1);
    let len = usize::try_from(range.end.saturating_sub(range.start))
        .map_err(|_| Error::Invalid(format!("range {range:?} of {name} is too large")))?;
    let mut out = Salvaged {
        bytes: Vec::with_capacity(len),
        lost: Vec::new(),
    };
    let mut pos = range.start;
    while pos < range.end {
        let end = ((pos / sector + 1) * sector).min(range.end);
        match backend.get(name, Some(pos..end)) {
            Ok(bytes) if bytes.len() as u64 == end - pos => out.bytes.extend_from_slice(&bytes),
            Ok(_) => {
                return Err(Error::corrupt(
                    name,
                    format!("bytes {pos}..{end} requested but fewer were read"),
                ));
            }
            Err(e) if is_unreadable(&e) && out.lost.len() < most_lost => {
                out.bytes.resize(out.bytes.len() + (end - pos) as usize, 0);
                let lost = u32::try_from(pos / sector)
                    .map_err(|_| Error::Invalid(format!("{name} has too many sectors")))?;
                out.lost.push(lost);
            }
            Err(e) => return Err(e),
        }
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ObjectInfo;

    /// A store of one object whose reads fail with EIO wherever they touch a lost 4 KiB sector.
    struct LosingSectors {
        bytes: Vec<u8>,
        lost: Vec<u64>,
    }

    impl Backend for LosingSectors {
        fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
            let range = range.unwrap_or(0..self.bytes.len() as u64);
            let touched = range.start / 4096..range.end.div_ceil(4096);
            if self.lost.iter().any(|s| touched.contains(s)) {
                return Err(Error::Storage {
                    name: name.into(),
                    source: std::io::Error::from_raw_os_error(libc::EIO),
                });
            }
            Ok(self.bytes[range.start as usize..range.end as usize].to_vec())
        }
        /// Reads before it checks the size, as a store that cannot stat cheaply would.
        fn get_bounded(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
            let bytes = self.get(name, None)?;
            if bytes.len() as u64 > limit {
                return Err(crate::backend::too_large(name, bytes.len() as u64, limit));
            }
            Ok(bytes)
        }
        fn put(&self, _: &str, _: &[u8]) -> Result<()> {
            unreachable!()
        }
        fn put_if_absent(&self, _: &str, _: &[u8]) -> Result<bool> {
            unreachable!()
        }
        fn list(&self, _: &str) -> Result<Vec<ObjectInfo>> {
            unreachable!()
        }
        fn delete(&self, _: &str) -> Result<()> {
            unreachable!()
        }
        fn stat(&self, _: &str) -> Result<u64> {
            Ok(self.bytes.len() as u64)
        }
        fn location(&self) -> String {
            "test".into()
        }
    }

    #[test]
    fn lost_sectors_are_zeroed_and_listed_and_the_rest_is_read() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let store = LosingSectors {
            bytes: bytes.clone(),
            lost: vec![1, 2],
        };
        let got = read_salvaging(&store, "x", 1 << 20, 4096, 8).unwrap();
        assert_eq!(got.lost, [1, 2]);
        assert_eq!(got.bytes.len(), bytes.len());
        assert_eq!(got.bytes[..4096], bytes[..4096]);
        assert!(got.bytes[4096..].iter().all(|&b| b == 0));
        // A range starting mid-sector: its sectors are still counted from the object's start.
        let got = read_range_by_sectors(&store, "x", 3000..9000, 4096, 8).unwrap();
        assert_eq!(got.lost, [1, 2]);
        assert_eq!(got.bytes.len(), 6000);
        assert_eq!(got.bytes[..1096], bytes[3000..4096]);
        assert!(got.bytes[1096..].iter().all(|&b| b == 0));
        // Sound: one read, nothing lost; other errors pass through.
        let sound = LosingSectors {
            bytes: bytes.clone(),
            lost: vec![],
        };
        let got = read_salvaging(&sound, "x", 1 << 20, 4096, 8).unwrap();
        assert!(got.lost.is_empty() && got.bytes == bytes);
        assert!(matches!(
            read_salvaging(&sound, "x", 100, 4096, 8),
            Err(Error::Corrupt { .. })
        ));
        // More lost than the reader can rebuild: the device's error, not zeros.
        assert!(matches!(
            read_salvaging(&store, "x", 1 << 20, 4096, 1),
            Err(e) if is_unreadable(&e)
        ));
        // Too large, found only after the whole read failed: refused, not read by sectors.
        assert!(matches!(
            read_salvaging(&store, "x", 9000, 4096, 8),
            Err(Error::Corrupt { .. })
        ));
    }
}
