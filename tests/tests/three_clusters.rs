//! Three real `shoal` processes on loopback, driven through their HTTP APIs by
//! `shoal demo`: imports converge, real requests resolved through a node's DNS follow
//! the affinity and fail over, a killed cluster's endpoints are withdrawn and come
//! back with it, only the majority side of a partition holds the lease, a stale token
//! is fenced, and the mesh converges after the heal. Every step has a deadline inside
//! the demo; this test checks its exit status and what it measured.

use std::path::PathBuf;
use std::process::Command;

/// The `shoal` binary of this build (`cargo nextest run --workspace` builds it beside
/// this test's own executable), or `$SHOAL_BIN`.
fn shoal_binary() -> PathBuf {
    shoal_tests::mesh::shoal_binary().expect("the shoal binary")
}

#[test]
fn three_clusters_converge_withdraw_fence_and_heal() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path().join("demo");
    let output = Command::new(shoal_binary())
        .args(["demo", "--dir"])
        .arg(&dir)
        .output()
        .expect("shoal demo starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs: String = ["us-east", "eu-west", "ap-southeast"]
        .iter()
        .map(|c| {
            let log = std::fs::read_to_string(dir.join(c).join("shoal.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            format!(
                "--- {c}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    assert!(
        output.status.success(),
        "shoal demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nlogs:\n{logs}"
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("summary.json")).expect("the demo writes summary.json"),
    )
    .expect("summary.json is JSON");

    // Real requests through DNS: every phase's answers came from where the policy says.
    assert_eq!(
        summary["requests_local"],
        serde_json::json!({"us-east": 20})
    );
    assert_eq!(
        summary["requests_failover"],
        serde_json::json!({"eu-west": 20})
    );
    assert_eq!(summary["requests_back"], serde_json::json!({"us-east": 20}));
    let none = &summary["requests_none"];
    assert!(
        none["us-east"].as_u64() > Some(0) && none["eu-west"].as_u64() > Some(0),
        "affinity none reaches both clusters: {none}"
    );
    // The client cannot reach eu-west before us-east's endpoints were written not ready.
    assert!(summary["failover_ms"].as_u64() >= summary["detection_ms"].as_u64());

    assert_eq!(summary["withdrawn_cluster"], "eu-west");
    let withdrawal_ms = summary["withdrawal_ms"].as_u64().expect("a number");
    // The lan preset suspects a silent member for 1.5 s before SWIM declares it down,
    // then withdraws after 0.5 s of grace.
    assert!(
        withdrawal_ms >= 1_500,
        "withdrawn too early: {withdrawal_ms} ms"
    );

    let cut = summary["cut_off_cluster"].as_str().expect("a cluster");
    let majority = summary["majority_holder"].as_str().expect("a cluster");
    assert_ne!(cut, majority, "the cut-off cluster cannot hold the lease");
    assert!(!summary["cut_off_write_ready"].as_bool().expect("a bool"));
    assert!(
        summary["majority_token"].as_u64() > summary["first_token"].as_u64(),
        "tokens grow across holders: {summary}"
    );
    assert_eq!(summary["stale_write_rejected"], true);

    // The generated objects are there for a person to read.
    let out = dir.join("ap-southeast/standalone/out");
    let files: Vec<String> = std::fs::read_dir(&out)
        .expect("the standalone output exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("serviceimport") && f.contains("rebel-base")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.starts_with("endpointslice")),
        "{files:?}"
    );
}
