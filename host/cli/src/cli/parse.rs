//! Value parsers of the flags: counts and durations that must be at least
//! 1 (parsed into `NonZero*` types, so a zero cannot reach the node), and
//! upper bounds that keep deadlines from overflowing.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};

/// Parses a count or duration that must be at least 1: a zero is refused
/// with an error naming the flag, instead of being silently raised.
pub(crate) fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let value: T = text.trim().parse().map_err(|e: T::Err| e.to_string())?;
    if value < T::from(1) {
        return Err("must be at least 1".into());
    }
    Ok(value)
}

/// Upper bounds of the durations and sizes `stead up` takes: far above any
/// sensible setting, and low enough that deadlines computed from them
/// (`now + 2 * timeout`, epoch ticks, bytes) cannot overflow.
pub(crate) const MAX_CALL_DEADLINE_MS: u64 = 3_600_000; // 1 hour of CPU for one guest call
pub(crate) const MAX_IDLE_TIMEOUT_SECS: u64 = 365 * 24 * 3600; // 1 year
pub(crate) const MAX_REQUEST_TIMEOUT_MS: u64 = 24 * 3_600_000; // 1 day
pub(crate) const MAX_MEMORY_LIMIT_MIB: usize = 1 << 20; // 1 TiB

/// A parser for a value from 1 to `max`, each bound named in its error.
pub(crate) fn up_to<T>(max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + From<u8> + std::fmt::Display + Copy + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    move |text| {
        let value = at_least_one::<T>(text)?;
        if value > max {
            return Err(format!("must be at most {max}"));
        }
        Ok(value)
    }
}

/// Longest dedup horizon `stead up` takes: ten years.
pub(crate) const MAX_DEDUP_HORIZON: std::time::Duration =
    std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses a duration as `<number><unit>` with unit `s`, `m`, `h` or `d`
/// (a bare number is seconds), from 1 second to [`MAX_DEDUP_HORIZON`].
pub(crate) fn horizon(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        other => {
            return Err(format!(
                "unknown unit `{other}`: give a number of seconds, or a number with s, m, h or d (e.g. 24h)"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|e| format!("`{text}` is not a duration: {e}"))?;
    let duration = std::time::Duration::from_secs(n.saturating_mul(per_unit));
    if duration.is_zero() {
        return Err("must be at least 1s".into());
    }
    if duration > MAX_DEDUP_HORIZON {
        return Err(format!(
            "must be at most {}d",
            MAX_DEDUP_HORIZON.as_secs() / (24 * 3600)
        ));
    }
    Ok(duration)
}

/// The longest lease ttl or renewal interval accepted.
pub(crate) const MAX_LEASE_TIME: std::time::Duration = std::time::Duration::from_secs(600);

/// Parses a lease time as `<number>ms` or `<number>s` (a bare number is
/// milliseconds), from 10 ms to [`MAX_LEASE_TIME`].
pub(crate) fn lease_time(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "ms"),
    };
    let n: u64 = number
        .parse()
        .map_err(|e| format!("`{text}` is not a duration: {e}"))?;
    let duration = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        other => {
            return Err(format!(
                "unknown unit `{other}`: give milliseconds, or a number with ms or s (e.g. 2s, 500ms)"
            ));
        }
    };
    if duration < std::time::Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    if duration > MAX_LEASE_TIME {
        return Err(format!("must be at most {}s", MAX_LEASE_TIME.as_secs()));
    }
    Ok(duration)
}

/// A journal: `sled` (the embedded default) or a PostgreSQL URL.
pub(crate) fn journal(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "sled" || text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(text.to_owned())
    } else {
        Err("give `sled` or a PostgreSQL URL, postgres://user[:password]@host:port/database".into())
    }
}

/// A count of at least 1.
pub(crate) fn nonzero_usize(text: &str) -> Result<NonZeroUsize, String> {
    at_least_one::<usize>(text).map(nz_usize)
}

/// A count of at least 1.
pub(crate) fn nonzero_u32(text: &str) -> Result<NonZeroU32, String> {
    at_least_one::<u32>(text).map(|v| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN))
}

/// A value from 1 to `max`.
pub(crate) fn nonzero_up_to_u64(
    max: u64,
) -> impl Fn(&str) -> Result<NonZeroU64, String> + Clone + Send + Sync + 'static {
    let parse = up_to(max);
    move |text| parse(text).map(|v| NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN))
}

/// A value from 1 to `max`.
pub(crate) fn nonzero_up_to_usize(
    max: usize,
) -> impl Fn(&str) -> Result<NonZeroUsize, String> + Clone + Send + Sync + 'static {
    let parse = up_to(max);
    move |text| parse(text).map(nz_usize)
}

/// `v` as a non-zero count. Every caller has checked `v >= 1` or passes a
/// non-zero default (a test parses every default); 0 would become 1.
pub(crate) fn nz_usize(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap_or(NonZeroUsize::MIN)
}

/// `v` as a non-zero count (see [`nz_usize`]).
pub(crate) fn nz_u64(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN)
}

/// `v` as a non-zero count (see [`nz_usize`]).
pub(crate) fn nz_u32(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}
