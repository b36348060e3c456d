//! POSIX access ACLs set through `setxattr("system.posix_acl_access")`, as `cp -a` and
//! `setfacl` set a file's mode: the stage derives the mode bits from the ACL, as the kernel does
//! for a file system with ACLs, and keeps the xattr only when the ACL says more than a mode can.
//!
//! Why: `cp -a` creates each file 0600 and then sets its permissions by writing its ACL, not by
//! chmod. Stored as an opaque xattr, the snapshot would record 0600 for every file `cp -a`
//! copied in.

/// The Linux xattr form of an ACL: a version word, then 8-byte entries (tag, perm, id).
const ACL_VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// What an access ACL means for the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclMode {
    /// The rwx bits for owner, group (the mask, when there is one) and others.
    pub permissions: u32,
    /// Whether the ACL holds nothing but those three: it is then the mode, and no xattr.
    pub minimal: bool,
}

/// Reads `value` as an access ACL; `None` when it is not one (it is then stored as it is).
pub fn access_acl_mode(value: &[u8]) -> Option<AclMode> {
    let (version, entries) = value.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != ACL_VERSION || entries.len() % 8 != 0 {
        return None;
    }
    let (mut owner, mut group, mut mask, mut other) = (None, None, None, None);
    let mut count = 0;
    for entry in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let perm = u32::from(u16::from_le_bytes([entry[2], entry[3]]) & 0o7);
        match tag {
            USER_OBJ => owner = Some(perm),
            GROUP_OBJ => group = Some(perm),
            MASK => mask = Some(perm),
            OTHER => other = Some(perm),
            _ => {}
        }
        count += 1;
    }
    let group_bits = mask.or(group)?;
    Some(AclMode {
        permissions: owner? << 6 | group_bits << 3 | other?,
        minimal: count == 3 && mask.is_none(),
    })
}

/// `value`, an access ACL, with its owner, group-class (the mask, else the owning group) and
/// other permissions set from `mode`, as the kernel rewrites a file's ACL on chmod; `None` when
/// `value` is not an access ACL.
pub fn with_mode(value: &[u8], mode: u32) -> Option<Vec<u8>> {
    access_acl_mode(value)?;
    let mut out = value.to_vec();
    let has_mask = value[4..]
        .chunks_exact(8)
        .any(|e| u16::from_le_bytes([e[0], e[1]]) == MASK);
    for entry in out[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let bits = match tag {
            USER_OBJ => (mode >> 6) & 7,
            MASK => (mode >> 3) & 7,
            GROUP_OBJ if !has_mask => (mode >> 3) & 7,
            OTHER => mode & 7,
            _ => continue,
        };
        entry[2..4].copy_from_slice(&(bits as u16).to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16)]) -> Vec<u8> {
        let mut out = ACL_VERSION.to_le_bytes().to_vec();
        for (tag, perm) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&perm.to_le_bytes());
            out.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        out
    }

    #[test]
    fn a_minimal_acl_is_a_mode_and_a_mask_sets_the_group_bits() {
        assert_eq!(
            access_acl_mode(&acl(&[(USER_OBJ, 6), (GROUP_OBJ, 4), (OTHER, 4)])),
            Some(AclMode {
                permissions: 0o644,
                minimal: true
            })
        );
        let extended = acl(&[
            (USER_OBJ, 7),
            (0x02, 7),
            (GROUP_OBJ, 5),
            (MASK, 1),
            (OTHER, 0),
        ]);
        assert_eq!(
            access_acl_mode(&extended),
            Some(AclMode {
                permissions: 0o710,
                minimal: false
            })
        );
        let narrowed = with_mode(&extended, 0o600).unwrap();
        assert_eq!(access_acl_mode(&narrowed).unwrap().permissions, 0o600);
        assert_eq!(access_acl_mode(b"junk"), None);
        assert_eq!(access_acl_mode(&acl(&[(USER_OBJ, 6)])), None);
    }
}
