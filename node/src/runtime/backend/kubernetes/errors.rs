//! What an API server's answer means for the backend, and how long to wait before
//! trying again.
//!
//! - 409 from server-side apply: another field manager owns a field Shoal sets. Counted
//!   and reported on the export's status; the object is left as it is (no force).
//! - 410: the watch's resource version expired. The watcher relists by itself.
//! - 429 and 5xx, or no answer at all: back off with jitter and retry. Nothing is
//!   deleted or withdrawn because of an error.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// The first retry delay after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// An API request's failure, by what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// 409: a field-manager conflict, or an optimistic-concurrency loss.
    Conflict,
    /// 410: too old a resource version.
    Gone,
    /// 429: the API server asks to slow down.
    Throttled,
    /// 5xx.
    Server,
    /// 404: the object (or its namespace) does not exist.
    NotFound,
    /// 401 or 403: Shoal's credentials lack a permission (see deploy/rbac.yaml).
    Denied,
    /// 400 or 422: the API server refused the object as invalid.
    Invalid,
    /// No answer: connection refused, reset, timed out.
    Unreachable,
    /// Anything else.
    Other,
}

impl ErrorClass {
    pub fn metric_label(self) -> &'static str {
        match self {
            ErrorClass::Conflict => "conflict",
            ErrorClass::Gone => "gone",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Server => "server",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Denied => "denied",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Unreachable => "unreachable",
            ErrorClass::Other => "other",
        }
    }

    /// Whether a retry after backing off may succeed without anything else changing.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled | ErrorClass::Server | ErrorClass::Unreachable | ErrorClass::Gone
        )
    }
}

/// The class of an HTTP status code.
pub fn class_of_code(code: u16) -> ErrorClass {
    match code {
        409 => ErrorClass::Conflict,
        410 => ErrorClass::Gone,
        429 => ErrorClass::Throttled,
        404 => ErrorClass::NotFound,
        401 | 403 => ErrorClass::Denied,
        400 | 422 => ErrorClass::Invalid,
        500..=599 => ErrorClass::Server,
        _ => ErrorClass::Other,
    }
}

/// The class of a kube client error.
pub fn classify(error: &kube::Error) -> ErrorClass {
    match error {
        kube::Error::Api(status) => class_of_code(status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => ErrorClass::Unreachable,
        _ => ErrorClass::Other,
    }
}

/// Exponential backoff from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], each delay drawn
/// uniformly from its upper half ("equal jitter"), so that replicas and clusters that
/// failed together do not retry together.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    rng: SmallRng,
}

impl Default for Backoff {
    /// Seeded from the wall clock and the process id: variety, not secrecy.
    fn default() -> Self {
        #[allow(clippy::disallowed_methods)] // jitter needs variety between processes
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self::seeded(u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(32))
    }
}

impl Backoff {
    pub fn seeded(seed: u64) -> Self {
        Self {
            attempt: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The delay before the next retry; each call doubles the bound.
    pub fn next_delay(&mut self) -> Duration {
        let shift = self.attempt.min(16);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = BACKOFF_MIN
            .saturating_mul(1 << shift)
            .min(BACKOFF_MAX)
            .as_millis() as u64;
        let half = ceiling / 2;
        Duration::from_millis(half + self.rng.random_range(0..=half))
    }

    /// After a success: the next failure starts again at the minimum.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn failures(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(class_of_code(409), ErrorClass::Conflict);
        assert_eq!(class_of_code(410), ErrorClass::Gone);
        assert_eq!(class_of_code(429), ErrorClass::Throttled);
        assert_eq!(class_of_code(503), ErrorClass::Server);
        assert_eq!(class_of_code(403), ErrorClass::Denied);
        assert_eq!(class_of_code(422), ErrorClass::Invalid);
        assert!(ErrorClass::Throttled.is_transient());
        assert!(!ErrorClass::Conflict.is_transient());
    }

    #[test]
    fn backoff_grows_within_jittered_bounds_and_resets() {
        let mut b = Backoff::seeded(7);
        let first = b.next_delay();
        assert!(
            first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN,
            "{first:?}"
        );
        let second = b.next_delay();
        assert!(
            second >= BACKOFF_MIN && second <= BACKOFF_MIN * 2,
            "{second:?}"
        );
        for _ in 0..30 {
            let d = b.next_delay();
            assert!(d <= BACKOFF_MAX, "{d:?}");
        }
        let late = b.next_delay();
        assert!(late >= BACKOFF_MAX / 2 && late <= BACKOFF_MAX, "{late:?}");
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }
}
