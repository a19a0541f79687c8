//! A function's versions as the registry holds them, for `compute
//! versions`: each with its whole digest (to paste into `promote` or
//! `center --pin`), its role, its size, its limits file and when it was
//! deployed.

use super::{message::Role, state::State};
use serde::Serialize;

/// One version of a function.
#[derive(Clone, Debug, Serialize)]
pub struct Version {
    /// `sha256:<hex>`, whole.
    pub digest: String,
    /// `current`, `staged` or `previous`.
    pub role: &'static str,
    /// The module's size in bytes.
    pub bytes: usize,
    /// Its limits file's text, if it has one.
    pub limits: Option<String>,
    /// When it was deployed, in seconds since the Unix epoch, as its
    /// deployer's clock said; `None` for versions deployed before
    /// deployers wrote it.
    pub deployed: Option<u64>,
}

/// The versions of `function`, current first, then staged, then
/// previous; `None` when the registry holds no such function.
pub fn of(state: &State, function: &str) -> Option<Vec<Version>> {
    let held = state.functions.get(function)?;
    let versions = [
        (Role::Current, &held.current),
        (Role::Staged, &held.staged),
        (Role::Previous, &held.previous),
    ]
    .into_iter()
    .filter_map(|(role, digest)| {
        let digest = digest.as_ref()?;
        let stored = held.stored.get(digest)?;
        Some(Version {
            digest: digest.clone(),
            role: role.as_str(),
            bytes: stored.bytes.len(),
            limits: stored.limits.clone(),
            deployed: stored.deployed,
        })
    })
    .collect();
    Some(versions)
}

/// `seconds` since the Unix epoch as a UTC date and time,
/// `2026-12-07 11:50:01 UTC`.
pub fn utc(seconds: u64) -> String {
    let (days, time) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_471_401), "2026-12-05 11:50:01 UTC");
        assert_eq!(utc(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }
}
