//! `shoal-sim run --json` prints one object with every field other tools read.

use std::process::Command;

const FIELDS: [&str; 18] = [
    "seed",
    "scenario",
    "clusters",
    "replicas",
    "converged",
    "violations",
    "violation_details",
    "false_withdrawals",
    "withdrawals_refuted",
    "propagation_ms",
    "withdrawal_ms",
    "bytes_per_update",
    "floor_bytes_per_update",
    "membership_bytes_per_node_per_s",
    "trace_hash",
    "events",
    "wall_ms",
    "replay",
];

fn run_json(args: &[&str]) -> (serde_json::Value, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
        .args(args)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON object, one line: {stdout}"
    );
    let value = serde_json::from_str(&stdout).expect("valid JSON");
    (value, out.status.success())
}

#[test]
fn the_report_has_every_contract_field() {
    let (v, ok) = run_json(&[
        "run",
        "--clusters",
        "4",
        "--seed",
        "3",
        "--scenario",
        "crash-restart",
        "--duration-s",
        "60",
        "--json",
    ]);
    for field in FIELDS {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert_eq!(v["seed"], 3);
    assert_eq!(v["scenario"], "crash-restart");
    assert_eq!(
        (v["clusters"].as_u64(), v["replicas"].as_u64()),
        (Some(4), Some(2))
    );
    for p in ["p50", "p99", "max"] {
        assert!(v["propagation_ms"][p].is_number(), "propagation {p}");
        assert!(v["withdrawal_ms"].get(p).is_some(), "withdrawal {p}");
    }
    assert!(v["trace_hash"].as_str().is_some_and(|h| h.len() == 16));
    assert_eq!(
        ok,
        v["violations"] == 0 && v["converged"] == true,
        "exit status"
    );
}

#[test]
fn nothing_killed_means_null_withdrawal_figures() {
    let (v, ok) = run_json(&[
        "run",
        "--clusters",
        "3",
        "--seed",
        "1",
        "--scenario",
        "steady",
        "--duration-s",
        "40",
        "--json",
    ]);
    assert!(ok);
    assert!(v["withdrawal_ms"]["p50"].is_null() && v["withdrawal_ms"]["max"].is_null());
}

#[test]
fn the_affinity_scenario_reports_its_bounds_and_failovers() {
    let (v, ok) = run_json(&[
        "run",
        "--clusters",
        "4",
        "--seed",
        "2",
        "--scenario",
        "affinity",
        "--json",
    ]);
    assert!(ok, "{v}");
    let a = &v["affinity"];
    for field in [
        "ready_bound_ms",
        "down_bound_ms",
        "nearest_margin_ms",
        "probe_round_ms",
        "failovers",
        "down_failovers",
        "returns",
        "nearest_moves",
        "nearest_checks",
    ] {
        assert!(a[field].is_u64(), "affinity.{field}: {a}");
    }
    assert!(a["ready_bound_ms"].as_u64() > Some(0) && a["down_bound_ms"].as_u64() > Some(0));
    for p in ["p50", "p99", "max"] {
        for figure in ["failover_ms", "down_failover_ms", "return_ms"] {
            assert!(a[figure][p].is_number(), "affinity.{figure}.{p}: {a}");
        }
    }
    let (steady, _) = run_json(&[
        "run",
        "--clusters",
        "3",
        "--seed",
        "1",
        "--scenario",
        "steady",
        "--duration-s",
        "30",
        "--json",
    ]);
    assert!(
        steady.get("affinity").is_none(),
        "only where the scenario has it"
    );
}

#[test]
fn a_bad_command_line_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
        .args([
            "run",
            "--clusters",
            "4",
            "--scenario",
            "nope",
            "--seed",
            "1",
        ])
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
}
