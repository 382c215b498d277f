//! The pod's time zone (`TZ`): Flink writes wall-clock times without an offset; the agent
//! attaches the zone's offset at that time.
//!
//! Zones come from the system's tzdb (`/usr/share/zoneinfo`, or `TZDIR`; the agent's image has
//! one) through jiff, with jiff's bundled copy for a system without one or without the zone.
//! chrono-tz compiled every zone into tables of pointers: ~30,000 relocations written by the
//! loader at every start, 1.7 MiB of the idle agent's RSS (BENCHMARKS.md).

use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, Offset, Timelike, Utc};
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone(TimeZone);

impl Zone {
    pub const UTC: Zone = Zone(TimeZone::UTC);

    /// An IANA zone by name (`Asia/Shanghai`); None when neither database has it.
    pub fn named(name: &str) -> Option<Zone> {
        TimeZone::get(name)
            .or_else(|_| TimeZoneDatabase::bundled().get(name))
            .ok()
            .map(Zone)
    }

    /// The IANA name (`UTC` for the default).
    pub fn name(&self) -> &str {
        self.0.iana_name().unwrap_or("UTC")
    }

    /// The offset of a wall-clock time of this zone. In a DST overlap the earlier instant's;
    /// None for a time that never existed (a DST gap) or one outside jiff's years ±9999.
    pub fn offset_of_local(&self, local: NaiveDateTime) -> Option<FixedOffset> {
        let civil = jiff::civil::DateTime::new(
            i16::try_from(local.year()).ok()?,
            i8::try_from(local.month()).ok()?,
            i8::try_from(local.day()).ok()?,
            i8::try_from(local.hour()).ok()?,
            i8::try_from(local.minute()).ok()?,
            i8::try_from(local.second()).ok()?,
            i32::try_from(local.nanosecond().min(999_999_999)).ok()?,
        )
        .ok()?;
        let offset = match self.0.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset,
            // The offset in force before the clocks went back: the earlier instant.
            AmbiguousOffset::Fold { before, .. } => before,
            AmbiguousOffset::Gap { .. } => return None,
        };
        FixedOffset::east_opt(offset.seconds())
    }

    /// An instant as this zone's wall-clock time with its offset.
    pub fn at(&self, instant: DateTime<Utc>) -> DateTime<FixedOffset> {
        let offset = jiff::Timestamp::from_second(instant.timestamp())
            .map(|t| self.0.to_offset(t).seconds())
            .ok()
            .and_then(FixedOffset::east_opt)
            .unwrap_or(Utc.fix());
        instant.with_timezone(&offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, mi, 0))
            .unwrap()
    }

    #[test]
    fn offsets_of_wall_clock_times() {
        let shanghai = Zone::named("Asia/Shanghai").unwrap();
        assert_eq!(shanghai.name(), "Asia/Shanghai");
        assert_eq!(
            shanghai.offset_of_local(local(2026, 11, 22, 19, 3)),
            FixedOffset::east_opt(8 * 3600)
        );
        assert_eq!(
            Zone::UTC.offset_of_local(local(2026, 7, 1, 12, 0)),
            FixedOffset::east_opt(0)
        );
        assert_eq!(Zone::UTC.name(), "UTC");
    }

    #[test]
    fn dst_overlap_takes_the_earlier_instant_and_a_gap_has_no_offset() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        // 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice.
        assert_eq!(
            berlin.offset_of_local(local(2026, 10, 25, 2, 30)),
            FixedOffset::east_opt(2 * 3600)
        );
        assert_eq!(
            berlin.offset_of_local(local(2026, 10, 25, 3, 30)),
            FixedOffset::east_opt(3600)
        );
        // 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 never happens.
        assert_eq!(berlin.offset_of_local(local(2026, 3, 29, 2, 30)), None);
    }

    #[test]
    fn an_instant_gets_the_offset_in_force_then() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        let summer = local(2026, 7, 1, 10, 0).and_utc();
        assert_eq!(berlin.at(summer).to_rfc3339(), "2026-07-01T12:00:00+02:00");
        let winter = local(2026, 1, 1, 10, 0).and_utc();
        assert_eq!(berlin.at(winter).to_rfc3339(), "2026-01-01T11:00:00+01:00");
    }

    #[test]
    fn unknown_names_are_refused() {
        for name in ["Mars/Olympus", "", "../etc/passwd", "Asia/Shanghai "] {
            assert_eq!(Zone::named(name), None, "{name:?}");
        }
    }

    #[test]
    fn the_bundled_fallback_carries_the_zones() {
        // What a system without /usr/share/zoneinfo gets.
        let tz = TimeZoneDatabase::bundled().get("Asia/Shanghai").unwrap();
        assert_eq!(tz.iana_name(), Some("Asia/Shanghai"));
    }
}
