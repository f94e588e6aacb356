//! How healthy each profile's cache is, and which log lines a change deserves.
//!
//! Pure logic over an injected `now`, so every transition is unit-tested without
//! sleeping:
//!
//! | state | when |
//! |---|---|
//! | `ok` | more than half of the credentials' life is left (life = `Expiration` - `Aovis.issued_at`) |
//! | `stale` | under half is left: a rotation was missed; logged at `warn`, once |
//! | `expired` | `Expiration` has passed; logged at `error`, once |
//! | `missing`, `unreadable` | no cache, or one that cannot be used; logged at `warn`, once |
//!
//! A new delivery (a different serial, key or expiry) is logged at `info` and resets
//! the once-only lines.

use std::collections::BTreeMap;

use aovis_formats::time::format_expiration;
use aovis_formats::ProfileName;
use chrono::{DateTime, TimeDelta, Utc};

use super::store::{Delivery, Slot};

/// The state of one profile at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// More than half of the life left.
    Ok {
        /// Time to expiry.
        left: TimeDelta,
    },
    /// Under half of the life left.
    Stale {
        /// Time to expiry.
        left: TimeDelta,
    },
    /// Past `Expiration`.
    Expired {
        /// Time since expiry.
        ago: TimeDelta,
    },
    /// No cache file.
    Missing,
    /// A cache file that cannot be used.
    Unreadable,
}

/// The health of a delivery at `now`.
pub fn delivery_health(delivery: &Delivery, now: DateTime<Utc>) -> Health {
    let expiration = delivery.credentials.expiration();
    if now >= expiration {
        return Health::Expired {
            ago: now - expiration,
        };
    }
    let left = expiration - now;
    match stale_at(delivery) {
        Some(stale_at) if now >= stale_at => Health::Stale { left },
        _ => Health::Ok { left },
    }
}

/// When a delivery turns stale: half way through its life. `None` for a cache
/// without provenance (written by hand), which only ever expires.
pub fn stale_at(delivery: &Delivery) -> Option<DateTime<Utc>> {
    let issued_at = delivery.meta.as_ref()?.issued_at;
    let expiration = delivery.credentials.expiration();
    let life = expiration - issued_at;
    (life > TimeDelta::zero()).then(|| issued_at + life / 2)
}

/// The health of a slot at `now`.
pub fn slot_health(slot: &Slot, now: DateTime<Utc>) -> Health {
    match slot {
        Slot::Loaded(delivery) => delivery_health(delivery, now),
        Slot::Missing => Health::Missing,
        Slot::Unreadable(_) => Health::Unreadable,
    }
}

/// A span for the status line: "3d 2h", "2h 5m", "41m", "30s".
fn span(delta: TimeDelta) -> String {
    let secs = delta.num_seconds().unsigned_abs();
    let (days, hours, minutes) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{secs}s")
    }
}

/// The systemd `STATUS=` line: every profile with its state, for example
/// `default: ok, 41m left; build: EXPIRED 3m ago`.
pub fn status_line(slots: &BTreeMap<ProfileName, Slot>, now: DateTime<Utc>) -> String {
    if slots.is_empty() {
        return "no profiles".to_owned();
    }
    let parts: Vec<String> = slots
        .iter()
        .map(|(profile, slot)| {
            let state = match slot_health(slot, now) {
                Health::Ok { left } => format!("ok, {} left", span(left)),
                Health::Stale { left } => format!("STALE, {} left", span(left)),
                Health::Expired { ago } => format!("EXPIRED {} ago", span(ago)),
                Health::Missing => "no cache".to_owned(),
                Health::Unreadable => "UNREADABLE cache".to_owned(),
            };
            format!("{}: {state}", profile.as_str())
        })
        .collect();
    parts.join("; ")
}

/// Something about a profile worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new delivery (or the one found at start).
    Delivered {
        /// Last four characters of the key id.
        key_suffix: String,
        /// `Expiration`, canonical form.
        expires: String,
        /// The delivery's serial, when the cache has provenance.
        serial: Option<u64>,
    },
    /// Under half of the life left.
    Stale {
        /// Time to expiry.
        left: TimeDelta,
    },
    /// Past expiry.
    Expired {
        /// Time since expiry.
        ago: TimeDelta,
    },
    /// The cache went away.
    Missing,
    /// The cache cannot be used; the reason names no value.
    Unreadable {
        /// Why.
        reason: String,
    },
}

/// What identifies one delivery: a change in any of these is a new one.
type Identity = (Option<u64>, String, DateTime<Utc>);

fn identity(delivery: &Delivery) -> Identity {
    (
        delivery.meta.as_ref().map(|meta| meta.serial),
        delivery.credentials.access_key_id().to_owned(),
        delivery.credentials.expiration(),
    )
}

/// The last thing logged about one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Delivery { identity: Identity, level: Level },
    Missing,
    Unreadable(String),
}

/// How far down the ok -> stale -> expired road a delivery has been logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Stale,
    Expired,
}

/// Remembers what was logged per profile, so each line is written once.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: BTreeMap<ProfileName, Seen>,
}

impl Tracker {
    /// The events `slot` deserves at `now`, given what was logged before.
    pub fn observe(
        &mut self,
        profile: &ProfileName,
        slot: &Slot,
        now: DateTime<Utc>,
    ) -> Vec<Event> {
        let previous = self.seen.get(profile);
        let mut events = Vec::new();
        let next = match slot {
            Slot::Missing => {
                if previous != Some(&Seen::Missing) {
                    events.push(Event::Missing);
                }
                Seen::Missing
            }
            Slot::Unreadable(reason) => {
                let seen = Seen::Unreadable(reason.clone());
                if previous != Some(&seen) {
                    events.push(Event::Unreadable {
                        reason: reason.clone(),
                    });
                }
                seen
            }
            Slot::Loaded(delivery) => {
                let identity = identity(delivery);
                let logged = match previous {
                    Some(Seen::Delivery {
                        identity: known,
                        level,
                    }) if *known == identity => Some(*level),
                    _ => None,
                };
                if logged.is_none() {
                    events.push(Event::Delivered {
                        key_suffix: delivery.credentials.key_id_suffix().to_owned(),
                        expires: format_expiration(delivery.credentials.expiration()),
                        serial: delivery.meta.as_ref().map(|meta| meta.serial),
                    });
                }
                let logged = logged.unwrap_or(Level::Ok);
                let level = match delivery_health(delivery, now) {
                    Health::Expired { ago } => {
                        if logged < Level::Expired {
                            events.push(Event::Expired { ago });
                        }
                        Level::Expired
                    }
                    Health::Stale { left } => {
                        if logged < Level::Stale {
                            events.push(Event::Stale { left });
                        }
                        Level::Stale.max(logged)
                    }
                    _ => logged,
                };
                Seen::Delivery { identity, level }
            }
        };
        self.seen.insert(profile.clone(), next);
        events
    }

    /// Forgets profiles no longer watched, so a profile added back is logged afresh.
    pub fn retain(&mut self, keep: impl Fn(&ProfileName) -> bool) {
        self.seen.retain(|profile, _| keep(profile));
    }
}

/// The next moment a loaded slot changes state after `now` (turns stale or
/// expires), so the watcher can wake exactly then instead of polling.
pub fn next_transition(slot: &Slot, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let Slot::Loaded(delivery) = slot else {
        return None;
    };
    let expiration = delivery.credentials.expiration();
    [stale_at(delivery), Some(expiration)]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::store::tests::delivery;
    use chrono::TimeZone;
    use std::sync::Arc;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, hour, minute, 0).unwrap()
    }

    fn profile() -> ProfileName {
        ProfileName::new("default").unwrap()
    }

    /// Issued 12:00, expires 13:00: stale from 12:30.
    fn loaded(serial: u64) -> Slot {
        Slot::Loaded(Arc::new(delivery(serial, at(12, 0), at(13, 0))))
    }

    #[test]
    fn health_follows_the_clock() {
        let slot = loaded(1);
        let cases = [
            (
                "fresh",
                at(12, 0),
                Health::Ok {
                    left: TimeDelta::hours(1),
                },
            ),
            (
                "just before half",
                at(12, 29),
                Health::Ok {
                    left: TimeDelta::minutes(31),
                },
            ),
            (
                "half",
                at(12, 30),
                Health::Stale {
                    left: TimeDelta::minutes(30),
                },
            ),
            (
                "late",
                at(12, 59),
                Health::Stale {
                    left: TimeDelta::minutes(1),
                },
            ),
            (
                "expiry",
                at(13, 0),
                Health::Expired {
                    ago: TimeDelta::zero(),
                },
            ),
            (
                "after",
                at(13, 3),
                Health::Expired {
                    ago: TimeDelta::minutes(3),
                },
            ),
        ];
        for (name, now, expected) in cases {
            assert_eq!(slot_health(&slot, now), expected, "{name}");
        }
    }

    #[test]
    fn a_cache_without_provenance_only_expires() {
        let mut delivery = delivery(1, at(12, 0), at(13, 0));
        delivery.meta = None;
        let slot = Slot::Loaded(Arc::new(delivery));
        assert_eq!(
            slot_health(&slot, at(12, 59)),
            Health::Ok {
                left: TimeDelta::minutes(1)
            }
        );
        assert_eq!(next_transition(&slot, at(12, 10)), Some(at(13, 0)));
    }

    #[test]
    fn logs_each_transition_once() {
        let mut tracker = Tracker::default();
        let slot = loaded(7);
        let delivered = tracker.observe(&profile(), &slot, at(12, 1));
        assert_eq!(
            delivered,
            [Event::Delivered {
                key_suffix: "WXYZ".into(),
                expires: "2026-11-22T13:00:00Z".into(),
                serial: Some(7)
            }]
        );
        assert!(tracker.observe(&profile(), &slot, at(12, 20)).is_empty());
        assert_eq!(
            tracker.observe(&profile(), &slot, at(12, 31)),
            [Event::Stale {
                left: TimeDelta::minutes(29)
            }]
        );
        assert!(tracker.observe(&profile(), &slot, at(12, 45)).is_empty());
        assert_eq!(
            tracker.observe(&profile(), &slot, at(13, 2)),
            [Event::Expired {
                ago: TimeDelta::minutes(2)
            }]
        );
        assert!(tracker.observe(&profile(), &slot, at(13, 30)).is_empty());
    }

    #[test]
    fn a_cache_found_expired_logs_delivery_and_expiry_but_not_stale() {
        let mut tracker = Tracker::default();
        let events = tracker.observe(&profile(), &loaded(1), at(14, 0));
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(events[0], Event::Delivered { .. }));
        assert_eq!(
            events[1],
            Event::Expired {
                ago: TimeDelta::hours(1)
            }
        );
    }

    #[test]
    fn a_new_delivery_resets_the_once_only_lines() {
        let mut tracker = Tracker::default();
        tracker.observe(&profile(), &loaded(1), at(12, 40));
        let renewed = Slot::Loaded(Arc::new(delivery(2, at(12, 45), at(13, 45))));
        let events = tracker.observe(&profile(), &renewed, at(12, 46));
        assert!(
            matches!(
                events[..],
                [Event::Delivered {
                    serial: Some(2),
                    ..
                }]
            ),
            "{events:?}"
        );
        assert_eq!(
            tracker.observe(&profile(), &renewed, at(13, 16)),
            [Event::Stale {
                left: TimeDelta::minutes(29)
            }]
        );
    }

    #[test]
    fn missing_and_unreadable_are_logged_once_per_change() {
        let mut tracker = Tracker::default();
        assert_eq!(
            tracker.observe(&profile(), &Slot::Missing, at(12, 0)),
            [Event::Missing]
        );
        assert!(tracker
            .observe(&profile(), &Slot::Missing, at(12, 1))
            .is_empty());
        let bad = Slot::Unreadable("not JSON".into());
        assert_eq!(
            tracker.observe(&profile(), &bad, at(12, 2)),
            [Event::Unreadable {
                reason: "not JSON".into()
            }]
        );
        assert!(tracker.observe(&profile(), &bad, at(12, 3)).is_empty());
        // The same delivery coming back after a gap is logged again.
        assert_eq!(tracker.observe(&profile(), &loaded(1), at(12, 4)).len(), 1);
    }

    #[test]
    fn next_transition_is_stale_then_expiry_then_none() {
        let slot = loaded(1);
        assert_eq!(next_transition(&slot, at(12, 10)), Some(at(12, 30)));
        assert_eq!(next_transition(&slot, at(12, 30)), Some(at(13, 0)));
        assert_eq!(next_transition(&slot, at(13, 0)), None);
        assert_eq!(next_transition(&Slot::Missing, at(12, 0)), None);
    }

    #[test]
    fn status_line_summarises_every_profile() {
        let mut slots = BTreeMap::new();
        slots.insert(ProfileName::new("default").unwrap(), loaded(1));
        slots.insert(
            ProfileName::new("build").unwrap(),
            Slot::Loaded(Arc::new(delivery(1, at(11, 0), at(12, 0)))),
        );
        slots.insert(ProfileName::new("ci").unwrap(), Slot::Missing);
        slots.insert(
            ProfileName::new("dev").unwrap(),
            Slot::Unreadable("x".into()),
        );
        assert_eq!(
            status_line(&slots, at(12, 3)),
            "build: EXPIRED 3m ago; ci: no cache; default: ok, 57m left; dev: UNREADABLE cache"
        );
        assert_eq!(status_line(&BTreeMap::new(), at(12, 0)), "no profiles");
        let mut old = BTreeMap::new();
        old.insert(ProfileName::new("old").unwrap(), loaded(1));
        let later = at(13, 0) + TimeDelta::days(3) + TimeDelta::hours(2);
        assert_eq!(status_line(&old, later), "old: EXPIRED 3d 2h ago");
        let mut one = BTreeMap::new();
        one.insert(ProfileName::new("p").unwrap(), loaded(1));
        assert_eq!(status_line(&one, at(12, 59)), "p: STALE, 1m left");
    }
}
