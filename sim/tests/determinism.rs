//! Invariant 7: the same spec gives the same trace, bit for bit; another seed does not.

use shoal_sim::invariants::determinism::check_same_trace;
use shoal_sim::{RunOptions, RunSpec, Scenario, run};

fn trace(seed: u64, scenario: Scenario) -> String {
    let mut spec = RunSpec::new(5, seed, scenario);
    spec.duration_s = Some(60);
    run(&spec, RunOptions::default()).report.trace_hash
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    for scenario in [
        Scenario::Chaos,
        Scenario::Byzantine,
        Scenario::CrashRestart,
        Scenario::Affinity,
    ] {
        let (a, b) = (trace(7, scenario), trace(7, scenario));
        assert!(check_same_trace(&a, &b).is_ok(), "{scenario}: {a} then {b}");
    }
}

#[test]
fn another_seed_gives_another_trace() {
    assert_ne!(trace(7, Scenario::Chaos), trace(8, Scenario::Chaos));
    assert_ne!(trace(7, Scenario::Steady), trace(7, Scenario::Lossy));
}

#[test]
fn recording_a_timeline_does_not_change_the_trace() {
    let mut spec = RunSpec::new(5, 11, Scenario::PartitionHeal);
    spec.duration_s = Some(60);
    let plain = run(&spec, RunOptions::default()).report;
    let plotted = run(
        &spec,
        RunOptions {
            timeline: true,
            ..RunOptions::default()
        },
    );
    assert_eq!(plain.trace_hash, plotted.report.trace_hash);
    let timeline = plotted.timeline.expect("asked for a timeline");
    assert_eq!(timeline.clusters.len(), 5);
    assert!(
        !timeline.partitions.is_empty(),
        "the partition is on the timeline"
    );
}
