//! Identifier newtypes: object ids and transaction ids.
//!
//! Both are 8-byte big-endian strings on the wire (`zeo-protocol.md` §7). A [`Tid`] is also a
//! ZODB `TimeStamp` (§6.9): its high 32 bits count minutes since 1900-01-01 00:00 UTC with
//! every month taken as 31 days, its low 32 bits count fractions (1/2^32) of that minute's
//! 60 seconds. Numeric order is time order.

use std::fmt;

/// An object id: 8 bytes, big-endian. [`Oid::ROOT`] (`z64`) is the root object.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(u64);

impl Oid {
    /// The root object, `z64`.
    pub const ROOT: Oid = Oid(0);

    /// An oid from its numeric value.
    pub const fn new(n: u64) -> Oid {
        Oid(n)
    }

    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The 8 wire bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Parses the 8 wire bytes; any other length is `None`.
    pub fn from_slice(b: &[u8]) -> Option<Oid> {
        Some(Oid(u64::from_be_bytes(b.try_into().ok()?)))
    }

    /// The next oid, or `None` past the last one.
    pub fn checked_next(self) -> Option<Oid> {
        self.0.checked_add(1).map(Oid)
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid(0x{:016x})", self.0)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:016x}", self.0)
    }
}

/// A transaction id, which is a ZODB `TimeStamp`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tid(u64);

/// Minutes in one TimeStamp "month" (31 days).
const MINUTES_PER_MONTH: u64 = 31 * 24 * 60;
/// Minutes in one TimeStamp "year" (12 months of 31 days).
const MINUTES_PER_YEAR: u64 = 12 * MINUTES_PER_MONTH;

impl Tid {
    /// `z64`: "no transaction" (an empty storage's last tid, the serial of a new object).
    pub const ZERO: Tid = Tid(0);
    /// `maxtid` (`7fff…ff`), used by `load` as "the current revision".
    pub const MAX: Tid = Tid(0x7fff_ffff_ffff_ffff);

    /// A tid from its numeric value.
    pub const fn new(n: u64) -> Tid {
        Tid(n)
    }

    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The 8 wire bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Parses the 8 wire bytes; any other length is `None`.
    pub fn from_slice(b: &[u8]) -> Option<Tid> {
        Some(Tid(u64::from_be_bytes(b.try_into().ok()?)))
    }

    /// The next tid (the 64-bit value plus one), or `None` past the last one.
    pub fn checked_next(self) -> Option<Tid> {
        self.0.checked_add(1).map(Tid)
    }

    /// The tid for a wall-clock instant given as seconds and nanoseconds since the Unix epoch.
    ///
    /// `None` for instants before 1900 cannot occur (the input is unsigned); instants so far in
    /// the future that the minute count leaves 32 bits give `None`.
    pub fn from_unix(secs: u64, nanos: u32) -> Option<Tid> {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days as i64);
        let hour = rem / 3600;
        let minute = (rem % 3600) / 60;
        let second = rem % 60;
        let hi = u64::try_from(year - 1900).ok()? * MINUTES_PER_YEAR
            + u64::from(month - 1) * MINUTES_PER_MONTH
            + u64::from(day - 1) * 24 * 60
            + hour * 60
            + minute;
        let hi = u32::try_from(hi).ok()?;
        // lo = floor(seconds_in_minute * 2^32 / 60), in integers (nanosecond resolution).
        let ns_in_minute = u128::from(second) * 1_000_000_000 + u128::from(nanos.min(999_999_999));
        let lo = (ns_in_minute << 32) / 60_000_000_000;
        let lo = u32::try_from(lo).ok()?;
        Some(Tid((u64::from(hi) << 32) | u64::from(lo)))
    }

    /// The tid for `now`, never at or below `last`: ZODB's `max(now, last + 1)` (§6.9).
    pub fn later_than(now: Tid, last: Tid) -> Option<Tid> {
        if now > last {
            Some(now)
        } else {
            last.checked_next()
        }
    }

    /// The UTC date and time this tid stands for.
    pub fn to_utc(self) -> UtcTime {
        let hi = self.0 >> 32;
        let lo = self.0 & 0xffff_ffff;
        let year = 1900 + hi / MINUTES_PER_YEAR;
        let month = (hi / MINUTES_PER_MONTH) % 12 + 1;
        let day = (hi / (24 * 60)) % 31 + 1;
        let hour = (hi / 60) % 24;
        let minute = hi % 60;
        // lo * 60 / 2^32 seconds, kept in nanoseconds.
        let nanos = (u128::from(lo) * 60_000_000_000) >> 32;
        UtcTime {
            year: year as u32,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: (nanos / 1_000_000_000) as u8,
            nanosecond: (nanos % 1_000_000_000) as u32,
        }
    }

    /// Seconds since the Unix epoch as a float, as ZODB's `TimeStamp.timeTime()` gives it
    /// (used for the `time` field of `history` and `undoLog`).
    pub fn to_unix_f64(self) -> f64 {
        let t = self.to_utc();
        let days = days_from_civil(i64::from(t.year), u32::from(t.month), u32::from(t.day));
        let secs = days * 86_400 + i64::from(t.hour) * 3600 + i64::from(t.minute) * 60;
        let lo = (self.0 & 0xffff_ffff) as f64;
        // As persistent's C TimeStamp.timeTime(): the seconds are added to the whole seconds
        // counted from 1900 and the 1900→1970 offset is subtracted after, so the float rounds
        // exactly as Python's does (undoLog, history and iterator times then compare equal).
        const FROM_1900: i64 = 2_208_988_800;
        ((secs + FROM_1900) as f64 + lo * 60.0 / 4_294_967_296.0) - FROM_1900 as f64
    }
}

impl fmt::Debug for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tid({:016x})", self.0)
    }
}

/// Sixteen lower-case hex digits, as ZEO's `server_status` prints `last-transaction`.
impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A client connection of the ZEO front, numbered by the driver in accept order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// A backend of a RAID, numbered in the order the configuration lists them (ids of removed
/// backends are not reused while the process runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u32);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend#{}", self.0)
    }
}

/// A broken-down UTC time, from [`Tid::to_utc`]. Day and month follow the TimeStamp encoding,
/// so a tid that no wall clock produces may show a day 31 in a 30-day month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year, e.g. 2026.
    pub year: u32,
    /// Month, 1–12.
    pub month: u8,
    /// Day of the month, 1–31.
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Whole seconds, 0–59.
    pub second: u8,
    /// Nanoseconds within the second (the tid's resolution is about 14 ns).
    pub nanosecond: u32,
}

/// ISO 8601 with microseconds, e.g. `2026-11-25T13:50:47.123456Z`.
impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.nanosecond / 1000
        )
    }
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01, proleptic Gregorian.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {

    #[test]
    fn to_unix_f64_rounds_exactly_as_python_timestamp_time_time() {
        // persistent 6 (C TimeStamp) in the pinned venv: TimeStamp(tid).timeTime().
        for (tid, py) in [
            (0x03e8_a1b2_c3d4_e5f6_u64, 1654115685.8980393),
            (0x03f0_0000_1234_5678, 1682570884.266667),
            (0x03f1_ffff_ffff_ffff, 1690262400.0),
            (0x03ec_abcd_ef98_7654, 1669826756.155208),
        ] {
            assert_eq!(Tid::new(tid).to_unix_f64().to_bits(), f64::to_bits(py), "{tid:x}");
        }
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tid_from_recorded_session_decodes_to_its_recording_time() {
        // Tid 040d40febc42c866 was committed by ZEO 6.2 during the recording made on
        // 2026-11-25 around 13:50 UTC (vectors/blob.*.jsonl).
        let t = Tid::new(0x040d_40fe_bc42_c866).to_utc();
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute), (2026, 11, 25, 13, 50));
    }

    #[test]
    fn known_timestamp_matches_zodb() {
        // ZODB: TimeStamp(2000, 1, 1, 0, 0, 0.0).raw() == b'\x03\x4f\xcd\x80\x00\x00\x00\x00'
        // hi = ((100*12 + 0)*31 + 0)*24*60 = 53568000 = 0x0331_6400? computed below.
        let hi: u64 = 100 * 12 * 31 * 24 * 60;
        let tid = Tid::from_unix(946_684_800, 0).expect("in range");
        assert_eq!(tid.get(), hi << 32);
        assert_eq!(tid.to_utc().to_string(), "2000-01-01T00:00:00.000000Z");
        // 30 seconds is half a minute: lo = 2^31.
        let tid = Tid::from_unix(946_684_830, 0).expect("in range");
        assert_eq!(tid.get(), (hi << 32) | 0x8000_0000);
    }

    #[test]
    fn display_is_sixteen_hex_digits() {
        assert_eq!(Tid::new(0x040d_40fe_bc42_c866).to_string(), "040d40febc42c866");
        assert_eq!(Tid::ZERO.to_string(), "0000000000000000");
    }

    #[test]
    fn later_than_never_goes_back() {
        let last = Tid::new(1000);
        assert_eq!(Tid::later_than(Tid::new(5), last), Some(Tid::new(1001)));
        assert_eq!(Tid::later_than(Tid::new(2000), last), Some(Tid::new(2000)));
        assert_eq!(Tid::later_than(Tid::new(0), Tid::new(u64::MAX)), None);
    }

    #[test]
    fn unix_time_round_trips_through_float() {
        let tid = Tid::from_unix(1_764_078_647, 250_000_000).expect("in range");
        let back = tid.to_unix_f64();
        assert!((back - 1_764_078_647.25).abs() < 1e-6, "{back}");
    }

    proptest! {
        #[test]
        fn time_order_is_tid_order(a in 0u64..8_000_000_000, an in 0u32..1_000_000_000,
                                   b in 0u64..8_000_000_000, bn in 0u32..1_000_000_000) {
            let ta = Tid::from_unix(a, an).expect("in range");
            let tb = Tid::from_unix(b, bn).expect("in range");
            prop_assert_eq!((a, an).cmp(&(b, bn)) == std::cmp::Ordering::Less, ta < tb || (ta == tb && (a, an) < (b, bn)));
            if (a, an) <= (b, bn) { prop_assert!(ta <= tb); }
        }

        #[test]
        fn utc_breakdown_matches_calendar(s in 0u64..8_000_000_000) {
            let t = Tid::from_unix(s, 0).expect("in range").to_utc();
            let days = days_from_civil(i64::from(t.year), u32::from(t.month), u32::from(t.day));
            let back = days * 86_400 + i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second);
            // lo truncates, so the seconds may come back one below.
            prop_assert!(back == s as i64 || back == s as i64 - 1, "{} vs {}", back, s);
        }

        #[test]
        fn oid_bytes_round_trip(n: u64) {
            prop_assert_eq!(Oid::from_slice(&Oid::new(n).to_bytes()), Some(Oid::new(n)));
            prop_assert_eq!(Tid::from_slice(&Tid::new(n).to_bytes()), Some(Tid::new(n)));
        }
    }
}
