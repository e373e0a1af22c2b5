//! Durations and sizes as the variables write them (`5m`, `500ms`, `2G`).

use super::MIB;
use std::time::Duration;

/// `300`, `300s`, `5m`, `1h`, `500ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(number.checked_mul(millis)?))
}

/// `1048576`, `512K`, `500M`, `2G` (powers of 1024; a trailing `B` or `iB` is
/// accepted).
pub fn parse_size(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let factor = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1024,
        "M" => MIB,
        "G" => 1024 * MIB,
        _ => return None,
    };
    number.checked_mul(factor)
}
