//! Local leader election between the replicas of one cluster, with a
//! `coordination.k8s.io` Lease in Shoal's namespace, as client-go's `leaderelection`
//! does it: the holder renews every retry period; a follower takes over once the Lease
//! has gone unrenewed for its whole duration, *as timed by the follower's own clock*
//! from when it last saw the Lease change (so clocks need not agree); a holder that
//! cannot renew within the renew deadline stops leading before its Lease can expire.
//!
//! [`Elector`] decides (it takes `now` and what was observed, and returns what to do);
//! [`run`] only does the IO: one watch on the Lease, and one write per renewal.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::errors::classify;

/// The Lease timing: `lease` is how long a holder's renewal counts; the holder steps
/// down when it could not renew for `renew_deadline`; everyone acts every `retry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderTiming {
    pub lease: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
}

/// What the elector should do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create it, holding it.
    Create,
    /// Write the Lease as ours: a renewal, or a takeover of an expired or released one.
    /// `transitions` is the new `leaseTransitions`.
    Write { transitions: i32 },
    /// Someone else holds a live Lease: follow, and look again at `until`.
    Follow { holder: String, until: Instant },
}

/// The decisions of one replica's election. No IO and no clock: `now` is passed in.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    timing: LeaderTiming,
    /// The Lease as last seen (from the watch or a write's answer), and when its
    /// holder or renew time last changed, by this replica's clock.
    observed: Option<(Lease, Instant)>,
    /// When this replica last renewed successfully, while it leads.
    renewed: Option<Instant>,
}

fn spec(lease: &Lease) -> LeaseSpec {
    lease.spec.clone().unwrap_or_default()
}

fn holder(lease: &Lease) -> Option<String> {
    spec(lease).holder_identity.filter(|h| !h.is_empty())
}

impl Elector {
    pub fn new(identity: String, timing: LeaderTiming) -> Self {
        Self {
            identity,
            timing,
            observed: None,
            renewed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this replica leads at `now`: it renewed within the renew deadline.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.renewed
            .is_some_and(|at| now.duration_since(at) < self.timing.renew_deadline)
    }

    /// The Lease as seen at `now` (`None`: it does not exist).
    pub fn observe(&mut self, now: Instant, lease: Option<Lease>) {
        let Some(lease) = lease else {
            self.observed = None;
            return;
        };
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| {
            let (a, b) = (spec(seen), spec(&lease));
            a.holder_identity != b.holder_identity || a.renew_time != b.renew_time
        });
        let since = match &self.observed {
            Some((_, at)) if !changed => *at,
            _ => now,
        };
        if holder(&lease).as_deref() != Some(self.identity.as_str()) {
            self.renewed = None;
        }
        self.observed = Some((lease, since));
    }

    /// A write of ours succeeded at `now` and the API server answered `lease`.
    pub fn renewed(&mut self, now: Instant, lease: Lease) {
        self.observed = Some((lease, now));
        self.renewed = Some(now);
    }

    /// What to do at `now`.
    pub fn step(&self, now: Instant) -> Step {
        let Some((lease, since)) = &self.observed else {
            return Step::Create;
        };
        let spec = spec(lease);
        let transitions = spec.lease_transitions.unwrap_or(0);
        match holder(lease) {
            Some(h) if h == self.identity => Step::Write { transitions },
            Some(h) => {
                let duration = spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map_or(self.timing.lease, Duration::from_secs);
                let until = *since + duration;
                if now < until {
                    Step::Follow { holder: h, until }
                } else {
                    Step::Write {
                        transitions: transitions.saturating_add(1),
                    }
                }
            }
            None => Step::Write {
                transitions: transitions.saturating_add(1),
            },
        }
    }

    /// The Lease to write for `step` (a renewal keeps the acquire time).
    pub fn desired(&self, wall: Timestamp, transitions: i32, name: &str, namespace: &str) -> Lease {
        let observed = self.observed.as_ref().map(|(l, _)| l);
        let ours = observed.and_then(holder).as_deref() == Some(self.identity.as_str());
        let acquire_time = match observed {
            Some(l) if ours => spec(l).acquire_time,
            _ => Some(MicroTime(wall)),
        };
        let seconds = i32::try_from(self.timing.lease.as_secs().max(1)).unwrap_or(i32::MAX);
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                resource_version: observed.and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time,
                renew_time: Some(MicroTime(wall)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    /// The Lease with this replica's hold given up, for a clean shutdown: the next
    /// replica takes over at once instead of after the Lease duration.
    pub fn released(&self) -> Option<Lease> {
        let (lease, _) = self.observed.as_ref()?;
        if holder(lease).as_deref() != Some(self.identity.as_str()) {
            return None;
        }
        let mut lease = lease.clone();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        Some(lease)
    }
}

fn wall_now() -> Timestamp {
    #[allow(clippy::disallowed_methods)] // the Lease's renewTime is wall-clock time
    Timestamp::now()
}

/// Runs the election until `stop` turns true; publishes whether this replica leads on
/// `leading`. On stop, a holder releases the Lease.
pub async fn run(
    api: Api<Lease>,
    namespace: String,
    name: String,
    mut elector: Elector,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // The watch backs off by itself, so a failing watch never holds up a renewal.
    let mut events = watcher::watcher(api.clone(), config)
        .default_backoff()
        .boxed();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease))) => {
                    elector.observe(Instant::now(), Some(lease));
                }
                Some(Ok(watcher::Event::Delete(_))) => elector.observe(Instant::now(), None),
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(error)) => debug!(%error, "leader lease watch failed; it retries"),
                None => break,
            },
            () = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                next = now + elector.timing.retry;
                match elector.step(now) {
                    Step::Follow { holder, until } => {
                        debug!(%holder, "following");
                        next = next.min(until);
                    }
                    step => {
                        let transitions = match step {
                            Step::Write { transitions } => transitions,
                            _ => 0,
                        };
                        let lease = elector.desired(wall_now(), transitions, &name, &namespace);
                        let written = match step {
                            Step::Create => api.create(&PostParams::default(), &lease).await,
                            _ => api.replace(&name, &PostParams::default(), &lease).await,
                        };
                        match written {
                            Ok(lease) => elector.renewed(Instant::now(), lease),
                            Err(error) => {
                                // 409: another replica wrote first; the watch shows it.
                                debug!(error = %error, class = classify(&error).metric_label(), "leader lease not written");
                            }
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        let leads = elector.is_leader(now);
        if leads != *leading.borrow() {
            if leads {
                info!(identity = elector.identity(), "became the local leader");
            } else {
                warn!(identity = elector.identity(), "no longer the local leader");
            }
            leading.send_replace(leads);
        }
        if leads {
            // Step down by the deadline if renewals keep failing.
            if let Some(at) = elector.renewed {
                next = next.min(at + elector.timing.renew_deadline);
            }
        }
    }
    leading.send_replace(false);
    if let Some(lease) = elector.released() {
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(_) => info!("released the local leader lease"),
            Err(error) => warn!(%error, "could not release the local leader lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: LeaderTiming = LeaderTiming {
        lease: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry: Duration::from_secs(2),
    };

    fn lease(holder: &str, renew_s: i64, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("shoal-leader".into()),
                resource_version: Some(format!("{renew_s}")),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renew_s).unwrap())),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn no_lease_is_created() {
        let e = Elector::new("a".into(), TIMING);
        assert_eq!(e.step(Instant::now()), Step::Create);
    }

    #[test]
    fn a_live_lease_of_another_is_followed_until_it_goes_unrenewed_for_its_duration() {
        let t0 = Instant::now();
        let mut e = Elector::new("b".into(), TIMING);
        e.observe(t0, Some(lease("a", 100, 3)));
        let until = t0 + Duration::from_secs(15);
        assert_eq!(
            e.step(t0 + Duration::from_secs(14)),
            Step::Follow {
                holder: "a".into(),
                until
            }
        );
        // The same renew time seen again later does not restart the count.
        e.observe(t0 + Duration::from_secs(10), Some(lease("a", 100, 3)));
        assert_eq!(e.step(until), Step::Write { transitions: 4 });
        // A renewal seen restarts it.
        e.observe(until, Some(lease("a", 115, 3)));
        assert!(matches!(e.step(until), Step::Follow { .. }));
        assert!(!e.is_leader(until));
    }

    #[test]
    fn the_holder_renews_and_steps_down_past_the_renew_deadline() {
        let t0 = Instant::now();
        let mut e = Elector::new("a".into(), TIMING);
        e.renewed(t0, lease("a", 100, 0));
        assert!(e.is_leader(t0 + Duration::from_secs(9)));
        assert_eq!(e.step(t0), Step::Write { transitions: 0 });
        assert!(!e.is_leader(t0 + Duration::from_secs(10)));
        let desired = e.desired(
            Timestamp::from_second(200).unwrap(),
            0,
            "shoal-leader",
            "ns",
        );
        let spec = desired.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(desired.metadata.resource_version.as_deref(), Some("100"));
    }

    #[test]
    fn another_holder_seen_ends_leadership_at_once() {
        let t0 = Instant::now();
        let mut e = Elector::new("a".into(), TIMING);
        e.renewed(t0, lease("a", 100, 0));
        e.observe(t0, Some(lease("b", 101, 1)));
        assert!(!e.is_leader(t0));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let mut a = Elector::new("a".into(), TIMING);
        a.renewed(t0, lease("a", 100, 2));
        let released = a.released().expect("a holds it");
        let mut b = Elector::new("b".into(), TIMING);
        b.observe(t0, Some(released));
        assert_eq!(b.step(t0), Step::Write { transitions: 3 });
        assert!(b.released().is_none(), "b does not hold it");
    }
}
