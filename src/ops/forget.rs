//! Retention policies: which snapshots of a group to keep, and why, with restic's semantics, so
//! a user's `--keep-*` flags mean here what they meant there.
//!
//! Snapshots are taken newest first. `--keep-last N` keeps the N newest; `--keep-hourly`,
//! `-daily`, `-weekly` (ISO weeks), `-monthly`, `-yearly N` keep the newest snapshot of each of
//! the N most recent hours (days, …) that have one, and — while a rule still has count left
//! when the oldest snapshot is reached — the oldest too, so the history kept is as long as
//! possible; `--keep-within 1y2m3d4h` keeps every snapshot that young relative to the newest
//! one (not to now: a host that stopped backing up keeps its last ones); `--keep-tag a,b` keeps
//! snapshots holding all of the listed tags. Rules are ORed; a snapshot kept by several lists
//! each reason. Calendar buckets are taken in the given time zone (the local one on the
//! command line). Snapshots dated after `now` never count as the newest.
//!
//! What it does not do: delete anything (the `forget` command removes the snapshot files), or
//! decide what data becomes unused (prune).

use crate::error::{Error, Result};
use crate::repo::ids::SnapshotId;
use crate::repo::snapshot::Snapshot;
use chrono::{DateTime, Datelike, Months, TimeZone, Timelike};
use std::collections::BTreeMap;

/// How many buckets a `--keep-*` rule keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Count {
    /// The rule is off.
    #[default]
    Off,
    /// The newest N buckets.
    Last(u32),
    /// Every bucket (`unlimited`).
    All,
}

impl std::str::FromStr for Count {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Count, String> {
        match s {
            "unlimited" | "-1" => Ok(Count::All),
            "0" => Ok(Count::Off),
            n => n
                .parse()
                .map(Count::Last)
                .map_err(|_| format!("{n:?}: a count, or `unlimited`")),
        }
    }
}

/// A `--keep-within` age: years, months, days and hours, as restic writes it (`1y5m7d2h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Age {
    /// Years.
    pub years: u32,
    /// Months (`m` is months, as in restic; there is no minutes unit).
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl std::str::FromStr for Age {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Age, String> {
        let mut age = Age::default();
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: u32 = digits
                .parse()
                .map_err(|_| format!("{s:?}: expected a number before {c:?} (e.g. 1y5m7d2h)"))?;
            digits.clear();
            match c {
                'y' => age.years = n,
                'm' => age.months = n,
                'd' => age.days = n,
                'h' => age.hours = n,
                _ => return Err(format!("{s:?}: unknown unit {c:?} (y, m, d, h)")),
            }
        }
        if !digits.is_empty() || s.is_empty() {
            return Err(format!("{s:?}: every number needs a unit (y, m, d, h)"));
        }
        Ok(age)
    }
}

impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Age {
    /// `time` moved back by this age, calendar-wise (a month back from March 31 is the last
    /// day of February).
    fn before<Tz: TimeZone>(&self, time: &DateTime<Tz>) -> DateTime<Tz> {
        let months = self.years.saturating_mul(12).saturating_add(self.months);
        let back = time
            .clone()
            .checked_sub_months(Months::new(months))
            .unwrap_or_else(|| time.clone());
        back - chrono::Duration::days(i64::from(self.days))
            - chrono::Duration::hours(i64::from(self.hours))
    }
}

/// A retention policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--keep-last`.
    pub last: Count,
    /// `--keep-hourly`.
    pub hourly: Count,
    /// `--keep-daily`.
    pub daily: Count,
    /// `--keep-weekly` (ISO weeks).
    pub weekly: Count,
    /// `--keep-monthly`.
    pub monthly: Count,
    /// `--keep-yearly`.
    pub yearly: Count,
    /// `--keep-within`.
    pub within: Option<Age>,
    /// `--keep-tag`: each entry a list of tags a snapshot must all hold.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// Whether no rule is set: such a policy removes nothing (restic refuses to act on it too).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// One snapshot of a group with the policy's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The snapshot.
    pub id: SnapshotId,
    /// Why it is kept; empty when it is removed.
    pub reasons: Vec<String>,
}

impl Verdict {
    /// Whether the policy keeps it.
    pub fn kept(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The calendar rules, each with the bucket a time falls in.
type Bucket = fn(&DateTime<chrono::FixedOffset>) -> i64;

const CALENDAR: [(&str, Bucket); 5] = [
    ("hourly", |t| {
        i64::from(t.year()) * 1_000_000
            + i64::from(t.month()) * 10_000
            + i64::from(t.day()) * 100
            + i64::from(t.hour())
    }),
    ("daily", |t| {
        i64::from(t.year()) * 10_000 + i64::from(t.month()) * 100 + i64::from(t.day())
    }),
    ("weekly", |t| {
        let week = t.iso_week();
        i64::from(week.year()) * 100 + i64::from(week.week())
    }),
    ("monthly", |t| {
        i64::from(t.year()) * 100 + i64::from(t.month())
    }),
    ("yearly", |t| i64::from(t.year())),
];

/// Applies `policy` to one group of snapshots; returns every snapshot newest first with its
/// reasons to be kept (none: removed). Times are read in `zone`; `now` bounds the newest.
pub fn apply<Tz: TimeZone>(
    policy: &Policy,
    group: &[(SnapshotId, Snapshot)],
    zone: &Tz,
    now: i64,
) -> Vec<Verdict> {
    let mut order: Vec<&(SnapshotId, Snapshot)> = group.iter().collect();
    order.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let local = |ns: i64| {
        DateTime::from_timestamp_nanos(ns)
            .with_timezone(zone)
            .fixed_offset()
    };
    let newest = order
        .iter()
        .map(|(_, s)| s.time)
        .filter(|&t| t <= now)
        .max()
        .unwrap_or(now);
    let within_from = policy.within.map(|age| age.before(&local(newest)));
    // Remaining count and last bucket seen, per rule: keep-last first, then the calendar.
    let counts = [
        policy.last,
        policy.hourly,
        policy.daily,
        policy.weekly,
        policy.monthly,
        policy.yearly,
    ];
    let mut left: Vec<Count> = counts.to_vec();
    let mut last_bucket: Vec<Option<i64>> = vec![None; counts.len()];
    let oldest = order.len().saturating_sub(1);
    order
        .iter()
        .enumerate()
        .map(|(nr, (id, snapshot))| {
            let mut reasons = Vec::new();
            for tags in &policy.tags {
                if tags.iter().all(|t| snapshot.tags.contains(t)) {
                    reasons.push(format!("has tags [{}]", tags.join(",")));
                }
            }
            let time = local(snapshot.time);
            if let (Some(from), Some(age)) = (&within_from, policy.within)
                && time > *from
            {
                reasons.push(format!("within {age}"));
            }
            for rule in 0..counts.len() {
                if left[rule] == Count::Off || left[rule] == Count::Last(0) {
                    continue;
                }
                let (name, bucket) = match rule {
                    0 => ("last", nr as i64),
                    _ => (CALENDAR[rule - 1].0, (CALENDAR[rule - 1].1)(&time)),
                };
                // The oldest is kept too while a rule has count left: the longest history.
                let new_bucket = last_bucket[rule] != Some(bucket);
                if new_bucket || nr == oldest {
                    last_bucket[rule] = Some(bucket);
                    if let Count::Last(n) = &mut left[rule] {
                        *n -= 1;
                    }
                    reasons.push(match (rule, new_bucket) {
                        (0, _) => "last snapshot".to_string(),
                        (_, true) => format!("{name} snapshot"),
                        (_, false) => format!("oldest {name} snapshot"),
                    });
                }
            }
            Verdict { id: *id, reasons }
        })
        .collect()
}

/// What snapshots are grouped by before a policy is applied to each group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// By host name.
    pub host: bool,
    /// By the set of paths.
    pub paths: bool,
    /// By the set of tags.
    pub tags: bool,
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<GroupBy, String> {
        let mut by = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            match part {
                "host" => by.host = true,
                "paths" => by.paths = true,
                "tags" => by.tags = true,
                _ => return Err(format!("{part:?}: group by host, paths and/or tags")),
            }
        }
        Ok(by)
    }
}

/// The key of a group: the host, sorted paths and sorted tags it stands for (empty when not
/// grouped by them).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    /// Host name, when grouped by host.
    pub host: Option<String>,
    /// Paths, when grouped by paths.
    pub paths: Option<Vec<String>>,
    /// Tags, when grouped by tags.
    pub tags: Option<Vec<String>>,
}

/// Splits `snapshots` into groups.
pub fn group(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    by: GroupBy,
) -> BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> {
    let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for (id, snapshot) in snapshots {
        let sorted = |list: &[String]| {
            let mut list = list.to_vec();
            list.sort();
            list
        };
        let key = GroupKey {
            host: by.host.then(|| snapshot.hostname.clone()),
            paths: by.paths.then(|| sorted(&snapshot.paths)),
            tags: by.tags.then(|| sorted(&snapshot.tags)),
        };
        groups.entry(key).or_default().push((id, snapshot));
    }
    groups
}

/// Removes the snapshot files of `ids`. Nothing else: the data they referenced stays until a
/// prune finds it unused.
pub fn remove_snapshots(repo: &crate::repo::Repository, ids: &[SnapshotId]) -> Result<()> {
    for id in ids {
        repo.backend()
            .delete(&format!("snapshots/{id}"))
            .map_err(|e| Error::Invalid(format!("removing snapshot {}: {e}", id.short())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::ids::BlobId;
    use crate::repo::snapshot::Summary;
    use chrono::Utc;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    fn snapshot(n: u8, time: i64, tags: &[&str]) -> (SnapshotId, Snapshot) {
        (
            SnapshotId([n; 32]),
            Snapshot {
                time,
                hostname: "mopped".into(),
                username: "u".into(),
                paths: vec!["/home/user/work".into()],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                parent: None,
                tree: BlobId::default(),
                program_version: "test".into(),
                copied_from: None,
                summary: Summary::default(),
            },
        )
    }

    /// The example of restic's documentation: one backup every Sunday for 12 weeks.
    fn twelve_sundays() -> Vec<(SnapshotId, Snapshot)> {
        let first = at("2019-09-01T11:00:00Z");
        (0..12u8)
            .map(|week| {
                let time = first + i64::from(week) * 7 * 86_400 * 1_000_000_000;
                snapshot(week, time, &[])
            })
            .collect()
    }

    fn kept(verdicts: &[Verdict]) -> Vec<u8> {
        let mut kept: Vec<u8> = verdicts
            .iter()
            .filter(|v| v.kept())
            .map(|v| v.id.0[0])
            .collect();
        kept.sort();
        kept
    }

    const NOW: &str = "2020-01-01T00:00:00Z";

    #[test]
    fn keep_daily_4_keeps_the_last_four_sundays_as_restics_documentation_shows() {
        let policy = Policy {
            daily: Count::Last(4),
            ..Policy::default()
        };
        let verdicts = apply(&policy, &twelve_sundays(), &Utc, at(NOW));
        assert_eq!(kept(&verdicts), [8, 9, 10, 11]);
        assert!(
            verdicts
                .iter()
                .filter(|v| v.kept())
                .all(|v| v.reasons == ["daily snapshot"])
        );
    }

    #[test]
    fn a_rule_with_count_left_keeps_the_oldest_too() {
        let policy = Policy {
            weekly: Count::Last(20),
            ..Policy::default()
        };
        // Twelve weeks: all kept, the oldest marked as such.
        let verdicts = apply(&policy, &twelve_sundays(), &Utc, at(NOW));
        assert_eq!(kept(&verdicts).len(), 12);
        let policy = Policy {
            monthly: Count::Last(6),
            ..Policy::default()
        };
        // September to November: three months, the newest of each, and the oldest of all.
        let verdicts = apply(&policy, &twelve_sundays(), &Utc, at(NOW));
        assert_eq!(kept(&verdicts), [0, 4, 8, 11]);
        let oldest = verdicts.iter().find(|v| v.id.0[0] == 0).unwrap();
        assert_eq!(oldest.reasons, ["oldest monthly snapshot"]);
    }

    #[test]
    fn keep_last_hourly_weekly_monthly_yearly_each_count_their_own_buckets() {
        let sundays = twelve_sundays();
        let apply_one = |policy: Policy| kept(&apply(&policy, &sundays, &Utc, at(NOW)));
        assert_eq!(
            apply_one(Policy {
                last: Count::Last(3),
                ..Policy::default()
            }),
            [9, 10, 11]
        );
        assert_eq!(
            apply_one(Policy {
                hourly: Count::Last(2),
                ..Policy::default()
            }),
            [10, 11]
        );
        assert_eq!(
            apply_one(Policy {
                weekly: Count::Last(2),
                ..Policy::default()
            }),
            [10, 11]
        );
        assert_eq!(
            apply_one(Policy {
                monthly: Count::Last(2),
                ..Policy::default()
            }),
            [8, 11]
        );
        assert_eq!(
            apply_one(Policy {
                yearly: Count::Last(1),
                ..Policy::default()
            }),
            [11]
        );
        assert_eq!(
            apply_one(Policy {
                last: Count::All,
                ..Policy::default()
            })
            .len(),
            12
        );
    }

    #[test]
    fn keep_within_counts_back_from_the_newest_snapshot_not_from_now() {
        let policy = Policy {
            within: Some("14d".parse().unwrap()),
            ..Policy::default()
        };
        // Now is a month after the last backup; the last two weeks of backups stay anyway.
        let verdicts = apply(&policy, &twelve_sundays(), &Utc, at(NOW));
        assert_eq!(kept(&verdicts), [10, 11]);
        assert_eq!(verdicts[0].reasons, ["within 14d"]);
        let policy = Policy {
            within: Some("1m".parse().unwrap()),
            ..Policy::default()
        };
        // A month before 2019-11-17 11:00 is 2019-10-17 11:00.
        assert_eq!(
            kept(&apply(&policy, &twelve_sundays(), &Utc, at(NOW))),
            [7, 8, 9, 10, 11]
        );
    }

    #[test]
    fn snapshots_dated_in_the_future_do_not_move_the_newest() {
        let mut sundays = twelve_sundays();
        sundays.push(snapshot(99, at("2030-01-01T00:00:00Z"), &[]));
        let policy = Policy {
            within: Some("14d".parse().unwrap()),
            ..Policy::default()
        };
        assert_eq!(kept(&apply(&policy, &sundays, &Utc, at(NOW))), [10, 11, 99]);
    }

    #[test]
    fn keep_tag_needs_every_tag_of_a_list_and_reasons_add_up() {
        let mut sundays = twelve_sundays();
        sundays[0].1.tags = vec!["a".into(), "b".into()];
        sundays[1].1.tags = vec!["a".into()];
        sundays[11].1.tags = vec!["a".into(), "b".into()];
        let policy = Policy {
            last: Count::Last(1),
            tags: vec![vec!["a".into(), "b".into()]],
            ..Policy::default()
        };
        let verdicts = apply(&policy, &sundays, &Utc, at(NOW));
        assert_eq!(kept(&verdicts), [0, 11]);
        let newest = &verdicts[0];
        assert_eq!(newest.reasons, ["has tags [a,b]", "last snapshot"]);
    }

    #[test]
    fn a_hundred_years_of_daily_backups_keep_7_daily_5_weekly_12_monthly_75_yearly() {
        // restic's documentation: one backup a day for 100 years; the rules overlap, so the
        // kept set is their union, each rule's own snapshots being the newest of its buckets.
        let start = at("1920-01-01T12:00:00Z");
        let days = 36_525;
        let group: Vec<(SnapshotId, Snapshot)> = (0..days)
            .map(|d: u32| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&d.to_be_bytes());
                let time = start + i64::from(d) * 86_400 * 1_000_000_000;
                (SnapshotId(id), snapshot(0, time, &[]).1)
            })
            .collect();
        let policy = Policy {
            daily: Count::Last(7),
            weekly: Count::Last(5),
            monthly: Count::Last(12),
            yearly: Count::Last(75),
            ..Policy::default()
        };
        let verdicts = apply(&policy, &group, &Utc, at("2030-01-01T00:00:00Z"));
        let count = |reason: &str| {
            verdicts
                .iter()
                .filter(|v| v.reasons.iter().any(|r| r == reason))
                .count()
        };
        assert_eq!((count("daily snapshot"), count("weekly snapshot")), (7, 5));
        assert_eq!(
            (count("monthly snapshot"), count("yearly snapshot")),
            (12, 75)
        );
        // The dailies hold one or two weeklies, the newest monthly and yearly are the newest
        // daily, and a monthly may be a weekly: restic's "7 + 4 + 12 or 11 + 75 or 74".
        let kept = verdicts.iter().filter(|v| v.kept()).count();
        assert!(
            (7 + 3 + 11 + 74..=7 + 4 + 12 + 75).contains(&kept),
            "{kept}"
        );
        assert!(verdicts[0].reasons.len() == 4, "{:?}", verdicts[0].reasons);
    }

    #[test]
    fn durations_and_counts_parse_as_restic_writes_them() {
        assert_eq!(
            "1y5m7d2h".parse::<Age>(),
            Ok(Age {
                years: 1,
                months: 5,
                days: 7,
                hours: 2
            })
        );
        assert!("7".parse::<Age>().is_err());
        assert!("1w".parse::<Age>().is_err());
        assert_eq!("unlimited".parse::<Count>(), Ok(Count::All));
        assert_eq!("3".parse::<Count>(), Ok(Count::Last(3)));
        assert_eq!(
            "host,paths".parse::<GroupBy>(),
            Ok(GroupBy {
                host: true,
                paths: true,
                tags: false
            })
        );
        assert!(Policy::default().is_empty());
    }
}
