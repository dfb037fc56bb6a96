//! Waiting on a condition with a deadline: the only way these tests wait.

use std::time::{Duration, Instant};

/// How often a condition is probed.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A condition that did not hold before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {} ms waiting for {what} (last seen: {last})", waited.as_millis())]
pub struct Timeout {
    /// What was waited for.
    pub what: String,
    /// How long it was waited for.
    pub waited: Duration,
    /// What the last probe saw instead.
    pub last: String,
}

/// Probes every [`POLL_INTERVAL`] until `probe` returns `Ok`, for at most `timeout`.
/// `probe` returns `Err(what it saw)` while the condition does not hold yet; the last
/// such observation is reported in the [`Timeout`].
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, Timeout> {
    let deadline = now() + timeout;
    match wait_until(deadline, || Ok::<_, std::convert::Infallible>(probe())) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(last)) => Err(Timeout {
            what: what.to_owned(),
            waited: timeout,
            last,
        }),
        Err(never) => match never {},
    }
}

/// Probes until `probe` returns `Ok(Ok(_))`, returns `Err(_)` (abort at once), or
/// `deadline` passes (then the last `Ok(Err(observation))` is returned).
pub(crate) fn wait_until<T, E>(
    deadline: Instant,
    mut probe: impl FnMut() -> Result<Result<T, String>, E>,
) -> Result<Result<T, String>, E> {
    loop {
        match probe()? {
            Ok(value) => return Ok(Ok(value)),
            Err(last) if now() >= deadline => return Ok(Err(last)),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// The wall clock of the harness: deadlines of real processes are real time.
#[allow(clippy::disallowed_methods)] // the harness drives real processes in real time
pub fn now() -> Instant {
    Instant::now()
}
