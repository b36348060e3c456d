use super::*;
use proptest::prelude::*;

/// Deterministic bytes that do not compress or repeat.
fn pack_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn id(pack: &[u8]) -> PackId {
    PackId(sha256(pack))
}

#[test]
fn recovery_sectors_follow_the_density() {
    assert_eq!(recovery_count(4096, DATA_DENSITY), 103);
    assert_eq!(recovery_count(1024, TREE_DENSITY), 103);
    assert_eq!(recovery_count(1, DATA_DENSITY), 4);
    assert_eq!(recovery_count(160, DATA_DENSITY), 4);
    assert_eq!(recovery_count(161, DATA_DENSITY), 5);
}

/// The byte layout of docs/FORMAT.md, frozen: a change to it must not go unnoticed.
#[test]
fn frozen_vector() {
    let pack = pack_bytes(7, 10_000);
    let object = build(&pack, &id(&pack), DATA_DENSITY);
    // 3 data sectors, 4 recovery: header 104, two tables of 4·7 + 32, four sectors.
    assert_eq!(object.len(), 104 + 2 * 60 + 4 * 4096);
    assert_eq!(&object[..8], b"cairnpar");
    assert_eq!(
        hex::encode(&object[..16]),
        "636169726e7061720100000000100000"
    );
    assert_eq!(
        hex::encode(sha256(&object)),
        "141a0836ae741f78d45955024740315dac2976ac891f0a0a8466f24c324e1a05"
    );
}

#[test]
fn an_undamaged_pack_heals_to_itself() {
    for len in [1, 4095, 4096, 4097, 100_000] {
        let pack = pack_bytes(len as u64, len);
        let object = build(&pack, &id(&pack), DATA_DENSITY);
        let parity = Parity::parse(&object, &id(&pack)).unwrap();
        assert_eq!(parity.pack_len(), len as u64);
        let damage = parity.damage(&pack, &[]);
        assert!(
            damage.bad_sectors.is_empty() && damage.repairable,
            "{damage:?}"
        );
        assert_eq!(parity.heal(&pack, &[]).unwrap(), pack);
    }
}

/// How a sector goes bad.
#[derive(Clone, Copy, Debug)]
enum Harm {
    Flip,
    Zero,
    Unreadable,
}

/// `pack` with `sectors` harmed so; returns the bytes as read and the unreadable sectors.
fn harmed(pack: &[u8], sectors: &[u32], harm: Harm) -> (Vec<u8>, Vec<u32>) {
    let mut read = pack.to_vec();
    let mut unreadable = Vec::new();
    for &s in sectors {
        let start = s as usize * SECTOR;
        let end = (start + SECTOR).min(read.len());
        match harm {
            Harm::Flip => read[start + (s as usize * 7919) % (end - start)] ^= 0x10,
            Harm::Zero => read[start..end].fill(0),
            Harm::Unreadable => {
                // What a read that failed leaves: nothing trustworthy.
                read[start..end].fill(0xEE);
                unreadable.push(s);
            }
        }
    }
    (read, unreadable)
}

/// `count` distinct sectors of `n`, spread by `seed`.
fn some_sectors(n: u32, count: u32, seed: u64) -> Vec<u32> {
    let mut chosen: Vec<u32> = Vec::new();
    let mut state = seed | 1;
    while chosen.len() < count.min(n) as usize {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        let s = ((state >> 33) % u64::from(n)) as u32;
        if !chosen.contains(&s) {
            chosen.push(s);
        }
    }
    chosen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Up to r bad sectors of any kind heal byte-exact; r + 1 are refused, never served.
    #[test]
    fn up_to_r_bad_sectors_heal_and_one_more_is_refused(
        len in prop_oneof![1usize..20_000, 20_000usize..(20 << 20)],
        seed in any::<u64>(),
        harm in prop_oneof![Just(Harm::Flip), Just(Harm::Zero), Just(Harm::Unreadable)],
        burst in any::<bool>(),
    ) {
        let pack = pack_bytes(seed, len);
        let object = build(&pack, &id(&pack), DATA_DENSITY);
        let parity = Parity::parse(&object, &id(&pack)).unwrap();
        let n = len.div_ceil(SECTOR) as u32;
        let r = recovery_count(n, DATA_DENSITY);
        let pick = |count: u32| if burst {
            let start = (seed % u64::from(n)) as u32;
            (start..start + count).map(|s| s % n).collect::<Vec<_>>()
        } else {
            some_sectors(n, count, seed)
        };
        let bad = pick(r.min(n));
        let (read, unreadable) = harmed(&pack, &bad, harm);
        prop_assert_eq!(parity.heal(&read, &unreadable).unwrap(), pack.clone());
        if n > r {
            let bad = pick(r + 1);
            let (read, unreadable) = harmed(&pack, &bad, harm);
            let refused = parity.heal(&read, &unreadable);
            let is_refused = matches!(refused, Err(ParityError::NotRepairable { .. }));
            prop_assert!(is_refused);
        }
    }
}

#[test]
fn a_pack_cut_short_by_up_to_r_sectors_heals() {
    let pack = pack_bytes(3, 300 * SECTOR + 123);
    let object = build(&pack, &id(&pack), DATA_DENSITY);
    let parity = Parity::parse(&object, &id(&pack)).unwrap();
    let r = recovery_count(301, DATA_DENSITY) as usize;
    let cut = &pack[..pack.len() - 123 - (r - 1) * SECTOR];
    assert_eq!(parity.heal(cut, &[]).unwrap(), pack);
    let too_short = &pack[..pack.len() - 123 - r * SECTOR];
    assert!(matches!(
        parity.heal(too_short, &[]),
        Err(ParityError::NotRepairable { .. })
    ));
}

#[test]
fn groups_heal_each_on_their_own() {
    let pack = pack_bytes(11, 10 * SECTOR);
    let object = build_with(&pack, &id(&pack), DATA_DENSITY, 3);
    let parity = Parity::parse(&object, &id(&pack)).unwrap();
    // Four groups (3, 3, 3, 1 sectors), four recovery sectors each: four bad in one group heal.
    let (read, unreadable) = harmed(&pack, &[0, 1, 2, 9], Harm::Unreadable);
    assert_eq!(parity.heal(&read, &unreadable).unwrap(), pack);
}

#[test]
fn one_damaged_table_copy_is_passed_over_and_two_are_refused() {
    let pack = pack_bytes(5, 50_000);
    let mut object = build(&pack, &id(&pack), DATA_DENSITY);
    object[HEADER + 3] ^= 1;
    let parity = Parity::parse(&object, &id(&pack)).unwrap();
    let (read, unreadable) = harmed(&pack, &[2], Harm::Zero);
    assert_eq!(parity.heal(&read, &unreadable).unwrap(), pack);
    let layout = Layout {
        len: pack.len() as u64,
        group: GROUP,
        density: DATA_DENSITY,
    };
    let second = HEADER + layout.table_len();
    object[second + 3] ^= 1;
    assert_eq!(
        Parity::parse(&object, &id(&pack)).err(),
        Some(ParityError::TablesDamaged)
    );
}

#[test]
fn a_hostile_parity_object_makes_the_heal_fail_and_serves_nothing() {
    let pack = pack_bytes(9, 40_000);
    let mut object = build(&pack, &id(&pack), DATA_DENSITY);
    // Wrong recovery data whose CRCs and table hashes are all made valid again.
    let layout = Layout {
        len: pack.len() as u64,
        group: GROUP,
        density: DATA_DENSITY,
    };
    let table_len = layout.table_len();
    let recovery_at = HEADER + 2 * table_len;
    for b in &mut object[recovery_at..] {
        *b = b.wrapping_add(1);
    }
    let n = layout.sectors() as usize;
    let mut table = object[HEADER..HEADER + table_len - 32].to_vec();
    for (j, shard) in object[recovery_at..].chunks(SECTOR).enumerate() {
        table[4 * (n + j)..4 * (n + j) + 4].copy_from_slice(&crc32c::crc32c(shard).to_le_bytes());
    }
    let hash = sha256(&table);
    table.extend_from_slice(&hash);
    object[HEADER..HEADER + table_len].copy_from_slice(&table);
    object[HEADER + table_len..recovery_at].copy_from_slice(&table);
    let parity = Parity::parse(&object, &id(&pack)).unwrap();
    let (read, unreadable) = harmed(&pack, &[1], Harm::Unreadable);
    assert_eq!(parity.heal(&read, &unreadable), Err(ParityError::Mismatch));
}

#[test]
fn malformed_objects_are_refused_with_a_reason() {
    let pack = pack_bytes(1, 9_000);
    let object = build(&pack, &id(&pack), DATA_DENSITY);
    let other = pack_bytes(2, 9_000);
    assert_eq!(
        Parity::parse(&object, &id(&other)).err(),
        Some(ParityError::OtherPack)
    );
    for bad in [
        &object[..50],
        &object[..object.len() - 1],
        b"cairnpar but nothing else of it".as_slice(),
    ] {
        assert!(matches!(
            Parity::parse(bad, &id(&pack)),
            Err(ParityError::Malformed(_))
        ));
    }
    let mut header = object.clone();
    header[50] ^= 1;
    assert!(matches!(
        Parity::parse(&header, &id(&pack)),
        Err(ParityError::Malformed(_))
    ));
}
