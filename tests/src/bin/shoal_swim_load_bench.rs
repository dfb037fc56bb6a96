//! `shoal-swim-load-bench`: does backend work slow down SWIM? Measured, never asserted.
//!
//! Starts a standalone mesh of three real `shoal` processes on loopback (c0, c1, c2).
//! The peers c1 and c2 time every direct SWIM ping they send to c0 until its ack
//! (`shoal_swim_ack_seconds{cluster="c0"}`, a histogram in the core). The bench reads
//! those histograms over a quiet window (`--quiet-s`), then hands c0's `in/` a
//! pathological file (100,000 nested `[`) and `--exports` exports at once, and keeps
//! measuring until both peers import every export (with a deadline); the counters go
//! on for `--settle-s` more.
//!
//! Printed, per window and peer: acks from c0, and p50, p99 and the largest bucket
//! any ack fell in (and, as a control, the same for the acks the peers send each
//! other: on a small machine the load slows every process), computed from the histogram's bucket deltas, so each figure is a
//! bucket's upper bound (1 ms, 2.5 ms, 5 ms, … 2.5 s, then `+Inf`), not a sample.
//! Also: c0's `shoal_suspicions_refuted_total` before and after, the peers' members
//! suspected, acks missed and withdrawals (deltas), how often a peer's `/v1/peers`
//! showed c0, or the other peer, other than alive (sampled), the time until both peers imported every
//! export, and c0's peak resident set (`VmHWM`). The table goes to stdout, then one
//! JSON line; `--json` prints only the JSON line. Progress goes to stderr.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use shoal_tests::k8s::wait::POLL_INTERVAL;
use shoal_tests::k8s::wait_for;
use shoal_tests::load::{self, DEEP_BRACKETS};
use shoal_tests::mesh::{Mesh, MeshConfig, Node, http_get, sample_value};

/// Most exports one run may hand c0.
const EXPORTS_MAX: u32 = 10_000;
/// How long the three nodes may take to meet and time a first ack from c0.
const MEET_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the peers' view of c0 is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The histogram family the peers export.
const FAMILY: &str = "shoal_swim_ack_seconds";
/// The busy node's cluster, and how the peers label its acks.
const BUSY: &str = "c0";

#[derive(Debug, Parser)]
#[command(about = "SWIM ack latency at the peers while one node's backend chews a large input")]
struct Args {
    /// Length of the quiet window before the load, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    quiet_s: u64,
    /// Exports handed to c0 at once.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(EXPORTS_MAX)))]
    exports: u32,
    /// After the first import, how many more rounds change every export (each round
    /// is written once the peers imported the previous one), so that the load lasts
    /// long enough for the peers to time many probes of c0.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    rounds: u32,
    /// After the import, how long the counters keep counting before the last
    /// reading (a refutation in flight lands), in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    settle_s: u64,
    /// How long the peers may take to import every export, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    import_timeout_s: u64,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
    /// Keep the mesh's directory (configs, logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// The wall clock: the bench measures real processes in real time.
#[allow(clippy::disallowed_methods)] // the one place the bench reads the clock
fn now() -> Instant {
    Instant::now()
}

/// One series of a Prometheus histogram: cumulative (upper bound, count) pairs ending
/// with `+Inf`, and the sum.
#[derive(Clone, Debug, Default, PartialEq)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
}

impl Histogram {
    /// The series of `FAMILY` labelled `cluster`, replica 0, in `text`.
    fn parse(text: &str, cluster: &str) -> Histogram {
        let labels = format!("cluster=\"{cluster}\",replica=\"0\"");
        let bucket = format!("{FAMILY}_bucket{{{labels},le=\"");
        let sum = format!("{FAMILY}_sum{{{labels}}}");
        let mut histogram = Histogram::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket) {
                let Some((le, count)) = rest.split_once("\"} ") else {
                    continue;
                };
                let le = if le == "+Inf" {
                    Some(f64::INFINITY)
                } else {
                    le.parse().ok()
                };
                if let (Some(le), Ok(count)) = (le, count.parse::<f64>()) {
                    histogram.buckets.push((le, count as u64));
                }
            }
        }
        histogram.sum = sample_float(text, &sum);
        histogram
    }

    fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |(_, n)| *n)
    }

    /// What was added between `earlier` and `self` (same bounds; an absent series
    /// counts as empty).
    fn minus(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| {
            (earlier.buckets.iter())
                .find(|(b, _)| *b == le)
                .map_or(0, |(_, n)| *n)
        };
        Histogram {
            buckets: (self.buckets.iter())
                .map(|(le, n)| (*le, n.saturating_sub(before(*le))))
                .collect(),
            sum: self.sum - earlier.sum,
        }
    }

    /// Both peers' samples together.
    fn plus(&self, other: &Histogram) -> Histogram {
        if self.buckets.is_empty() {
            return other.clone();
        }
        let theirs = |le: f64| {
            other
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0, |(_, n)| *n)
        };
        Histogram {
            buckets: (self.buckets.iter())
                .map(|(le, n)| (*le, n + theirs(*le)))
                .collect(),
            sum: self.sum + other.sum,
        }
    }

    /// The upper bound of the bucket holding the `q` quantile (nearest rank).
    fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        self.buckets
            .iter()
            .find(|(_, n)| *n >= rank)
            .map(|(le, _)| *le)
    }

    /// The upper bound of the highest bucket any sample fell in.
    fn max_bucket(&self) -> Option<f64> {
        self.quantile(1.0)
    }

    fn mean(&self) -> Option<f64> {
        let count = self.count();
        (count > 0).then(|| self.sum / count as f64)
    }
}

/// The value of a float sample in Prometheus text, 0 when absent.
fn sample_float(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == sample)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

/// What every node's `/metrics` showed at one instant.
#[derive(Clone, Debug)]
struct Snapshot {
    /// Per peer (c1, c2): its histogram of acks from c0.
    acks: Vec<Histogram>,
    /// The control: c1's histogram of acks from c2, and c2's of acks from c1.
    control: Vec<Histogram>,
    /// c0's refuted suspicions.
    refuted: u64,
    /// Per peer: members it suspected, acks it missed, clusters it withdrew.
    suspected: Vec<u64>,
    missed: Vec<u64>,
    withdrawals: Vec<u64>,
}

fn snapshot(mesh: &Mesh) -> anyhow::Result<Snapshot> {
    let texts: Vec<String> = (mesh.nodes.iter())
        .map(|n| {
            n.metrics()
                .map_err(|e| anyhow::anyhow!("{}: {e}", n.identity))
        })
        .collect::<Result<_, _>>()?;
    let peers = &texts[1..];
    let counter = |name: &str| peers.iter().map(|t| sample_value(t, name)).collect();
    Ok(Snapshot {
        acks: peers.iter().map(|t| Histogram::parse(t, BUSY)).collect(),
        control: vec![
            Histogram::parse(&peers[0], "c2"),
            Histogram::parse(&peers[1], "c1"),
        ],
        refuted: sample_value(&texts[0], "shoal_suspicions_refuted_total"),
        suspected: counter("shoal_members_suspected_total"),
        missed: counter("shoal_swim_acks_missed_total"),
        withdrawals: counter("shoal_withdrawals_total"),
    })
}

/// What the sampler saw.
#[derive(Clone, Copy, Debug, Default)]
struct Samples {
    samples: u64,
    /// Samples in which a peer listed c0 other than alive (or did not answer).
    busy_not_alive: u64,
    /// Samples in which a peer listed the other peer other than alive.
    other_not_alive: u64,
}

/// Samples the peers' `/v1/peers` every [`SAMPLE_EVERY`] until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Samples>,
}

impl Sampler {
    fn start(mesh: &Mesh) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peers: Vec<_> = mesh.nodes[1..].iter().map(|n| n.http).collect();
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut seen = Samples::default();
            while !flag.load(Ordering::Relaxed) {
                seen.samples += 1;
                let others = ["c2", "c1"];
                if !peers.iter().all(|http| sees_alive(*http, BUSY)) {
                    seen.busy_not_alive += 1;
                }
                if !peers
                    .iter()
                    .zip(others)
                    .all(|(http, o)| sees_alive(*http, o))
                {
                    seen.other_not_alive += 1;
                }
                thread::sleep(SAMPLE_EVERY);
            }
            seen
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Whether `peer` lists every replica of `cluster`, and each as alive.
fn sees_alive(peer: std::net::SocketAddr, cluster: &str) -> bool {
    let Ok(body) = http_get(peer, "/v1/peers") else {
        return false;
    };
    let Ok(peers) = serde_json::from_str::<Value>(&body) else {
        return false;
    };
    let states: Vec<&Value> = (peers.as_array().into_iter().flatten())
        .filter(|p| p["cluster"] == cluster)
        .map(|p| &p["state"])
        .collect();
    !states.is_empty() && states.iter().all(|s| *s == "alive")
}

/// The pathological file, then the exports, 100 per file.
fn write_load(busy: &Node, exports: u32) -> anyhow::Result<()> {
    let dir = busy
        .standalone_dir
        .as_ref()
        .context("c0 is not standalone")?;
    let in_dir = dir.join("in");
    load::write_load(&in_dir, exports as usize)
        .with_context(|| format!("write into {}", in_dir.display()))
}

/// Rewrites every export `args.rounds` times, each round once both peers accepted
/// the previous one's records (every export's first endpoint moves, so each round is
/// `exports` new records at each peer); returns how long it took.
fn churn(mesh: &Mesh, args: &Args, timeout: Duration) -> anyhow::Result<Duration> {
    let started = now();
    let in_dir = mesh.nodes[0]
        .standalone_dir
        .as_ref()
        .context("c0 is not standalone")?
        .join("in");
    let accepted = |peer: &Node| peer.metric("shoal_records_accepted_total");
    for round in 1..=args.rounds as usize {
        let before: Vec<u64> = (mesh.nodes[1..].iter())
            .map(accepted)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("a peer's metrics: {e}"))?;
        load::write_load_round(&in_dir, args.exports as usize, round)
            .with_context(|| format!("write round {round}"))?;
        wait_for("both peers accept the round's records", timeout, || {
            for (peer, before) in mesh.nodes[1..].iter().zip(&before) {
                let now = accepted(peer)?;
                if now < before + u64::from(args.exports) {
                    return Err(format!(
                        "{}: {} of {}",
                        peer.identity,
                        now - before,
                        args.exports
                    ));
                }
            }
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("round {round}: {e}"))?;
    }
    Ok(started.elapsed())
}

/// Waits until both peers see c0 alive and have timed at least one of its acks.
fn wait_to_meet(mesh: &Mesh) -> anyhow::Result<()> {
    wait_for("c1 and c2 time acks from c0", MEET_TIMEOUT, || {
        let s = snapshot(mesh).map_err(|e| e.to_string())?;
        let alive = mesh.nodes[1..].iter().all(|n| sees_alive(n.http, BUSY));
        let timed: Vec<u64> = s.acks.iter().map(Histogram::count).collect();
        (alive && timed.iter().all(|n| *n > 0))
            .then_some(())
            .ok_or(format!("c0 alive at both: {alive}, acks timed: {timed:?}"))
    })?;
    Ok(())
}

/// Waits until both peers import `exports` services; returns how long that took.
fn wait_for_imports(mesh: &Mesh, exports: u32, timeout: Duration) -> anyhow::Result<Duration> {
    let started = now();
    wait_for("c1 and c2 import every export of c0", timeout, || {
        let imported: Vec<u64> = (mesh.nodes[1..].iter())
            .map(|n| n.metric("shoal_imports"))
            .collect::<Result<_, _>>()?;
        (imported.iter().all(|n| *n >= u64::from(exports)))
            .then_some(())
            .ok_or(format!("imported: {imported:?}"))
    })?;
    Ok(now() - started)
}

/// c0's peak resident set in MiB (`VmHWM` of `/proc/<pid>/status`).
fn peak_rss_mib(node: &Node) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{}/status", node.pid()?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1_024.0)
}

/// Everything the bench measured.
struct Figures {
    quiet: Vec<Histogram>,
    load: Vec<Histogram>,
    quiet_control: Vec<Histogram>,
    load_control: Vec<Histogram>,
    quiet_samples: Samples,
    load_samples: Samples,
    before: Snapshot,
    after: Snapshot,
    import: Duration,
    /// The rounds after the import, and how long they took.
    rounds: u32,
    churn: Duration,
    peak_rss_mib: Option<f64>,
}

fn run(mesh: &Mesh, args: &Args) -> anyhow::Result<Figures> {
    wait_to_meet(mesh)?;
    eprintln!("quiet window: {} s", args.quiet_s);
    let start = snapshot(mesh)?;
    let sampler = Sampler::start(mesh);
    // An observation window, not a wait for a condition.
    thread::sleep(Duration::from_secs(args.quiet_s));
    let quiet_samples = sampler.finish();
    let before = snapshot(mesh)?;
    eprintln!(
        "writing the deep file and {} exports into c0's in/",
        args.exports
    );
    let sampler = Sampler::start(mesh);
    write_load(&mesh.nodes[0], args.exports)?;
    let timeout = Duration::from_secs(args.import_timeout_s);
    let import = wait_for_imports(mesh, args.exports, timeout)?;
    let rounds = churn(mesh, args, timeout)?;
    let imported = snapshot(mesh)?;
    // An observation window: what the load set in motion (a suspicion, its refutation)
    // is still counted.
    thread::sleep(Duration::from_secs(args.settle_s));
    let after = snapshot(mesh)?;
    let load_samples = sampler.finish();
    let window = |to: &[Histogram], from: &[Histogram]| -> Vec<Histogram> {
        to.iter().zip(from).map(|(t, f)| t.minus(f)).collect()
    };
    Ok(Figures {
        quiet: window(&before.acks, &start.acks),
        load: window(&imported.acks, &before.acks),
        quiet_control: window(&before.control, &start.control),
        load_control: window(&imported.control, &before.control),
        quiet_samples,
        load_samples,
        peak_rss_mib: peak_rss_mib(&mesh.nodes[0]),
        before,
        after,
        import,
        rounds: args.rounds,
        churn: rounds,
    })
}

fn seconds(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.is_infinite() => "+Inf".to_owned(),
        Some(v) => format!("{v}"),
    }
}

/// Per window: each peer's acks from c0, both together, then the control (the
/// peers' acks from each other). Series are named `timer<-acker`.
fn rows(f: &Figures) -> Vec<(&'static str, String, Histogram)> {
    let mut rows = Vec::new();
    let windows = [
        ("quiet", &f.quiet, &f.quiet_control),
        ("load", &f.load, &f.load_control),
    ];
    for (window, peers, control) in windows {
        let mut both = Histogram::default();
        for (i, h) in peers.iter().enumerate() {
            rows.push((window, format!("c{}<-c0", i + 1), h.clone()));
            both = both.plus(h);
        }
        rows.push((window, "both<-c0".to_owned(), both));
        for (name, h) in ["c1<-c2", "c2<-c1"].into_iter().zip(control.iter()) {
            rows.push((window, name.to_owned(), h.clone()));
        }
    }
    rows
}

fn deltas(after: &[u64], before: &[u64]) -> Vec<u64> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect()
}

fn print_table(f: &Figures, args: &Args) {
    println!(
        "\nSWIM ack latency at the peers, acks from c0 (bucket upper bounds, seconds); \
         load: a {DEEP_BRACKETS}-deep file and {} exports into c0, then every export changed, round after round",
        args.exports
    );
    println!(
        "{:<6} {:<9} {:>6} {:>8} {:>8} {:>10} {:>10}",
        "window", "series", "acks", "p50", "p99", "max-bucket", "mean"
    );
    for (window, series, h) in rows(f) {
        println!(
            "{:<6} {:<9} {:>6} {:>8} {:>8} {:>10} {:>10}",
            window,
            series,
            h.count(),
            seconds(h.quantile(0.5)),
            seconds(h.quantile(0.99)),
            seconds(h.max_bucket()),
            h.mean().map_or("-".to_owned(), |m| format!("{m:.6}")),
        );
    }
    println!(
        "counters and samples below: from the load's start until {} s after the import",
        args.settle_s
    );
    println!(
        "c0 suspicions refuted: {} before the load, {} after",
        f.before.refuted, f.after.refuted
    );
    println!(
        "peers (c1, c2): members suspected (any member) {:?}, acks missed {:?}, withdrawals {:?}",
        deltas(&f.after.suspected, &f.before.suspected),
        deltas(&f.after.missed, &f.before.missed),
        deltas(&f.after.withdrawals, &f.before.withdrawals),
    );
    for (window, seen) in [("quiet", f.quiet_samples), ("load", f.load_samples)] {
        println!(
            "{window}: of {} samples of both peers' /v1/peers, {} showed c0 not alive, {} \
             the other peer not alive",
            seen.samples, seen.busy_not_alive, seen.other_not_alive
        );
    }
    println!(
        "both peers imported all {} exports after {:.1} s (polled every {} ms)",
        args.exports,
        f.import.as_secs_f64(),
        POLL_INTERVAL.as_millis()
    );
    println!(
        "then {} rounds of every export changed took {:.1} s ({:.1} s a round)",
        f.rounds,
        f.churn.as_secs_f64(),
        f.churn.as_secs_f64() / f64::from(f.rounds.max(1))
    );
    println!(
        "c0 peak RSS (VmHWM): {}",
        f.peak_rss_mib
            .map_or("-".to_owned(), |m| format!("{m:.1} MiB"))
    );
}

fn samples(seen: Samples) -> Value {
    json!({
        "samples": seen.samples, "c0_not_alive": seen.busy_not_alive,
        "other_peer_not_alive": seen.other_not_alive,
    })
}

fn to_json(f: &Figures, args: &Args) -> Value {
    let windows: Vec<Value> = rows(f)
        .into_iter()
        .map(|(window, series, h)| {
            let le = |v: Option<f64>| {
                v.map(|v| {
                    if v.is_infinite() {
                        json!("+Inf")
                    } else {
                        json!(v)
                    }
                })
            };
            json!({
                "window": window, "series": series, "acks": h.count(),
                "p50_le_s": le(h.quantile(0.5)), "p99_le_s": le(h.quantile(0.99)),
                "max_bucket_le_s": le(h.max_bucket()), "mean_s": h.mean(),
            })
        })
        .collect();
    json!({
        "bench": "swim_load",
        "exports": args.exports,
        "quiet_s": args.quiet_s,
        "settle_s": args.settle_s,
        "acks_from_c0": windows,
        "c0_suspicions_refuted": { "before": f.before.refuted, "after": f.after.refuted },
        "peers_members_suspected": deltas(&f.after.suspected, &f.before.suspected),
        "peers_acks_missed": deltas(&f.after.missed, &f.before.missed),
        "peers_withdrawals": deltas(&f.after.withdrawals, &f.before.withdrawals),
        "samples_not_alive": { "quiet": samples(f.quiet_samples), "load": samples(f.load_samples) },
        "import_s": f.import.as_secs_f64(),
        "rounds": f.rounds,
        "churn_s": f.churn.as_secs_f64(),
        "c0_peak_rss_mib": f.peak_rss_mib,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!("starting a standalone mesh of 3 nodes");
    let mut mesh = Mesh::start(&MeshConfig::standalone(3)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let outcome = run(&mesh, &args);
    if args.keep {
        eprintln!("keeping {}", mesh.keep().display());
    }
    let figures = match outcome {
        Ok(figures) => figures,
        Err(e) => {
            eprintln!("the bench stopped early: {e:#}\n{}", mesh.log_tails(30));
            bail!("the bench stopped early: {e}");
        }
    };
    if !args.json {
        print_table(&figures, &args);
    }
    println!("{}", to_json(&figures, &args));
    Ok(())
}
