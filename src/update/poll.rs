//! When to ask the feed again.
//!
//! A pure function of the last result, so the rules can be table-tested and
//! the same schedule can be driven by a thread today and by moltd's event loop
//! later: the caller measures nothing and sleeps however it likes.
//!
//! * After a check that worked (including a 304): the interval plus a random
//!   share of the jitter, so replicas started together drift apart.
//! * After a rate limit: when the server said to come back (`Retry-After`
//!   in seconds or as an HTTP date, or `X-RateLimit-Reset`; at most a day),
//!   but never sooner than the backoff below, which counts rate limits as
//!   failures in a row. A container clock ahead of the server's turns a
//!   `Retry-After` date into "now", and without the backoff that would be a
//!   burst of quick retries against a server that already said no.
//! * After a transient failure: exponential backoff from `retry_min`, capped
//!   at `retry_max`, plus jitter.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub interval: Duration,
    pub jitter: Duration,
    /// First wait after a failure.
    pub retry_min: Duration,
    /// Longest wait after repeated failures.
    pub retry_max: Duration,
}

/// How the last check ended, as far as the schedule cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A check that worked, or failed in a way retrying sooner would not
    /// fix (a broken release waits for the next one).
    Normal,
    /// Rate limited, with the server's word on when to return if it gave
    /// one, as the `n`th failure in a row (1 for the first).
    RateLimited(Option<Duration>, u32),
    /// The `n`th failure in a row (1 for the first).
    Failed(u32),
}

impl Schedule {
    /// Backoff starts at the interval or 30 s, whichever is shorter, and never
    /// grows past the interval or an hour, whichever is longer.
    pub fn new(interval: Duration, jitter: Duration) -> Schedule {
        Schedule {
            interval,
            jitter,
            retry_min: interval.min(Duration::from_secs(30)),
            retry_max: interval.max(Duration::from_secs(3600)),
        }
    }

    /// The wait before the next check. `random` is in `[0, 1)`.
    pub fn next_wait(&self, outcome: Outcome, random: f64) -> Duration {
        let base = match outcome {
            Outcome::Normal => self.interval,
            Outcome::RateLimited(wait, n) => wait.unwrap_or_default().max(self.backoff(n)),
            Outcome::Failed(n) => self.backoff(n),
        };
        base + self.jitter.mul_f64(random.clamp(0.0, 1.0))
    }

    /// The wait after a run that ended in `outcome` (which counts one
    /// failure), keeping the count of failures in a row in `failures`.
    pub fn after(&self, outcome: Outcome, failures: &mut u32) -> Duration {
        let outcome = match outcome {
            Outcome::Failed(_) => {
                *failures += 1;
                Outcome::Failed(*failures)
            }
            Outcome::RateLimited(wait, _) => {
                *failures += 1;
                Outcome::RateLimited(wait, *failures)
            }
            Outcome::Normal => {
                *failures = 0;
                Outcome::Normal
            }
        };
        self.next_wait(outcome, random_fraction())
    }

    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.retry_min
            .saturating_mul(1 << doublings)
            .min(self.retry_max)
    }
}

/// The longest wait a rate limit may impose. A server's word is followed up
/// to here; beyond it (a misconfigured proxy's `Retry-After: 31536000`, a
/// reset time years away) it is taken as a mistake, not as a reason to stop
/// updating for good.
pub const RATE_LIMIT_WAIT_MAX: Duration = Duration::from_secs(24 * 3600);

/// How long a rate-limited client should wait, from the response headers:
/// `Retry-After` (seconds, or an HTTP date) first, else `X-RateLimit-Reset`
/// (a Unix time) minus `now`. Times already past mean now (the schedule
/// still waits at least its backoff); every answer is capped at
/// [`RATE_LIMIT_WAIT_MAX`].
pub fn rate_limit_wait(
    retry_after: Option<&str>,
    reset: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    let until = |at: SystemTime| at.duration_since(now).unwrap_or_default();
    let retry_after = retry_after.map(str::trim).and_then(|value| {
        value
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .or_else(|| httpdate::parse_http_date(value).ok().map(until))
    });
    let wait = match retry_after {
        Some(wait) => wait,
        None => {
            let reset = reset?.trim().parse::<u64>().ok()?;
            until(UNIX_EPOCH + Duration::from_secs(reset))
        }
    };
    Some(wait.min(RATE_LIMIT_WAIT_MAX))
}

/// A number in `[0, 1)` that differs between processes and calls: std's
/// randomly keyed hasher is random enough for jitter and needs no crate.
pub fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn next_wait_follows_the_last_result() {
        let schedule = Schedule::new(S(300), S(30));
        let table = [
            (Outcome::Normal, 0.0, S(300)),
            (Outcome::Normal, 0.5, S(315)),
            (Outcome::RateLimited(Some(S(45)), 1), 0.0, S(45)),
            (Outcome::RateLimited(Some(S(7200)), 1), 0.0, S(7200)),
            (Outcome::RateLimited(None, 1), 0.0, S(30)),
            // A date in the past (a clock ahead of the server's) or a short
            // wait: never sooner than the backoff, which still doubles.
            (Outcome::RateLimited(Some(S(0)), 1), 0.0, S(30)),
            (Outcome::RateLimited(Some(S(1)), 1), 0.5, S(45)),
            (Outcome::RateLimited(Some(S(0)), 3), 0.0, S(120)),
            (Outcome::RateLimited(Some(S(0)), 1000), 0.0, S(3600)),
            (Outcome::Failed(1), 0.0, S(30)),
            (Outcome::Failed(2), 0.0, S(60)),
            (Outcome::Failed(3), 0.0, S(120)),
            (Outcome::Failed(7), 0.0, S(1920)),
            (Outcome::Failed(8), 0.0, S(3600)),
            (Outcome::Failed(1000), 0.0, S(3600)),
            (Outcome::Failed(2), 1.0, S(90)),
        ];
        for (outcome, random, expected) in table {
            assert_eq!(
                schedule.next_wait(outcome, random),
                expected,
                "{outcome:?} {random}"
            );
        }
    }

    #[test]
    fn rate_limits_count_as_failures_in_a_row() {
        let schedule = Schedule::new(S(300), S(0));
        let mut failures = 0;
        let past = rate_limit_wait(
            Some("Thu, 01 Jan 1970 00:00:01 GMT"),
            None,
            UNIX_EPOCH + S(1_000),
        );
        let limited = Outcome::RateLimited(past, 1);
        assert_eq!(schedule.after(limited, &mut failures).as_secs(), 30);
        assert_eq!(
            schedule.after(Outcome::Failed(1), &mut failures).as_secs(),
            60
        );
        assert_eq!(schedule.after(limited, &mut failures).as_secs(), 120);
        assert_eq!(
            schedule.after(Outcome::Normal, &mut failures).as_secs(),
            300
        );
        assert_eq!(schedule.after(limited, &mut failures).as_secs(), 30);
    }

    #[test]
    fn short_and_long_intervals_bound_the_backoff() {
        let short = Schedule::new(S(5), S(0));
        assert_eq!(short.next_wait(Outcome::Failed(1), 0.0), S(5));
        assert_eq!(short.next_wait(Outcome::Failed(2), 0.0), S(10));
        let long = Schedule::new(S(86400), S(0));
        assert_eq!(long.next_wait(Outcome::Failed(1), 0.0), S(30));
        assert_eq!(long.next_wait(Outcome::Failed(30), 0.0), S(86400));
    }

    #[test]
    fn rate_limit_headers() {
        let now = UNIX_EPOCH + S(1_000);
        let table = [
            (Some("1"), None, Some(S(1))),
            (Some(" 60 "), Some("5000"), Some(S(60))),
            (None, Some("1030"), Some(S(30))),
            (None, Some("900"), Some(S(0))),
            // An HTTP date: in the past means now, whatever the reset says.
            (
                Some("Thu, 01 Jan 1970 00:00:01 GMT"),
                Some("1010"),
                Some(S(0)),
            ),
            // now + 90 s in each of RFC 9110's three formats.
            (Some("Thu, 01 Jan 1970 00:18:10 GMT"), None, Some(S(90))),
            (Some("Thursday, 01-Jan-70 00:18:10 GMT"), None, Some(S(90))),
            (Some("Thu Jan  1 00:18:10 1970"), None, Some(S(90))),
            // Neither seconds nor a date: the reset decides.
            (Some("soon"), Some("1010"), Some(S(10))),
            (Some("-5"), None, None),
            // Absurd values are capped.
            (Some("31536000"), None, Some(RATE_LIMIT_WAIT_MAX)),
            (None, Some("99999999999"), Some(RATE_LIMIT_WAIT_MAX)),
            (
                Some("Fri, 31 Dec 9999 23:59:59 GMT"),
                None,
                Some(RATE_LIMIT_WAIT_MAX),
            ),
            (None, None, None),
            (None, Some("soon"), None),
        ];
        for (retry_after, reset, expected) in table {
            assert_eq!(
                rate_limit_wait(retry_after, reset, now),
                expected,
                "{retry_after:?} {reset:?}"
            );
        }
    }

    #[test]
    fn random_fraction_is_in_range() {
        for _ in 0..100 {
            let r = random_fraction();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }
}
