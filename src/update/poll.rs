//! When to ask the feed again.
//!
//! A pure function of the last result, so the rules can be table-tested and
//! the same schedule can be driven by a thread today and by moltd's event loop
//! later: the caller measures nothing and sleeps however it likes.
//!
//! * After a check that worked (including a 304): the interval plus a random
//!   share of the jitter, so replicas started together drift apart.
//! * After a rate limit that said when to come back (`Retry-After` or
//!   `X-RateLimit-Reset`): exactly then, plus jitter.
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
    /// Rate limited, with the server's word on when to return if it gave one.
    RateLimited(Option<Duration>),
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
            Outcome::RateLimited(Some(wait)) => wait,
            Outcome::RateLimited(None) => self.backoff(1),
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
            other => {
                *failures = 0;
                other
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

/// How long a rate-limited client should wait, from the response headers:
/// `Retry-After` in seconds first, else `X-RateLimit-Reset` (a Unix time)
/// minus `now`.
pub fn rate_limit_wait(
    retry_after: Option<&str>,
    reset: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(seconds) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    let reset = reset?.trim().parse::<u64>().ok()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
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
            (Outcome::RateLimited(Some(S(1))), 0.0, S(1)),
            (Outcome::RateLimited(Some(S(7200))), 0.0, S(7200)),
            (Outcome::RateLimited(None), 0.0, S(30)),
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
            (
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                Some("1010"),
                Some(S(10)),
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
