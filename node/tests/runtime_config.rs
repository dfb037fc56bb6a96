#![allow(clippy::unwrap_used)]
//! The configuration file: a full valid file, each kind of bad field named, and
//! environment overrides.

use std::path::Path;

use shoal_node::runtime::config::{self, ConfigFileError};

/// A directory with the TLS files a config points at (their contents are not read here).
fn tls_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    for f in ["ca.crt", "us-east.crt", "us-east.key"] {
        std::fs::write(dir.path().join("certs").join(f), "x").unwrap();
    }
    dir
}

const VALID: &str = r#"
cluster = "us-east"
replica = 0
preset = "lan"
listen = "127.0.0.1:7100"
data_dir = "data"

[[seeds]]
cluster = "eu-west"
addr = "127.0.0.1:7200"

[[seeds]]
cluster = "ap-southeast"
replica = 1
addr = "127.0.0.1:7300"

[tls]
ca = "certs/ca.crt"
cert = "certs/us-east.crt"
key = "certs/us-east.key"
clusterset_dir = "certs"

[http]
listen = "127.0.0.1:7101"

[backend]
kind = "standalone"
dir = "standalone"

[lease]
voters = ["us-east", "eu-west", "ap-southeast"]

[timing]
withdraw_grace_ms = 3000

[chaos]
enabled = true
"#;

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("shoal.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<config::RuntimeConfig, ConfigFileError> {
    let dir = tls_dir();
    let path = write(dir.path(), text);
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    config::load(&path, env)
}

/// The field a load error names.
fn bad_field(text: &str) -> String {
    match load(text, &[]) {
        Err(ConfigFileError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn a_full_file_loads_with_relative_paths_resolved() {
    let dir = tls_dir();
    let path = write(dir.path(), VALID);
    let c = config::load(&path, Vec::new()).unwrap();
    assert_eq!(c.cluster.as_str(), "us-east");
    assert_eq!(c.core.seeds.len(), 2);
    assert_eq!(c.core.members_expected, 3);
    assert_eq!(c.core.withdraw_grace_ms, 3000);
    assert_eq!(c.core.lease.voters.len(), 3);
    assert!(c.core.publisher && c.chaos_enabled);
    assert_eq!(c.data_dir, dir.path().join("data"));
    assert_eq!(c.tls.cert, dir.path().join("certs/us-east.crt"));
    assert_eq!(c.backend_dir(), dir.path().join("standalone"));
    assert!(c.summary().contains("us-east/0 (publisher)"));
}

#[test]
fn each_bad_field_is_named() {
    assert_eq!(
        bad_field(&VALID.replace("127.0.0.1:7100", "localhost")),
        "listen"
    );
    assert_eq!(
        bad_field(&VALID.replace("\"127.0.0.1:7300\"", "\"nowhere\"")),
        "seeds[1].addr"
    );
    assert_eq!(
        bad_field(&VALID.replace("cluster = \"us-east\"", "cluster = \"US_East\"")),
        "cluster"
    );
    assert_eq!(
        bad_field(&VALID.replace("cluster = \"eu-west\"", "cluster = \"us-east\"")),
        "seeds"
    );
    assert_eq!(
        bad_field(&VALID.replace(
            "\"eu-west\", \"ap-southeast\"]",
            "\"eu-west\", \"eu-west\"]"
        )),
        "lease.voters"
    );
    assert_eq!(
        bad_field(&VALID.replace("withdraw_grace_ms = 3000", "probe_period_ms = 5")),
        "timing.probe_period_ms"
    );
    assert_eq!(
        bad_field(&VALID.replace("certs/us-east.key", "certs/missing.key")),
        "tls.key"
    );
    assert_eq!(
        bad_field(&VALID.replace("preset = \"lan\"", "preset = \"fast\"")),
        "preset"
    );
    let zero_rate = format!("{VALID}\n[transport]\npeer_bytes_per_s_max = 0\n");
    let err = load(&zero_rate, &[]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Field { field, reason } if field == "transport" && reason.contains("peer_bytes_per_s_max")),
        "{err}"
    );
}

#[test]
fn unknown_keys_and_bad_toml_are_syntax_errors_that_name_the_key() {
    let err = load(&VALID.replace("[chaos]", "[chaos]\nenabeld = true"), &[]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Syntax(m) if m.contains("enabeld")),
        "{err}"
    );
    let err = load("cluster = ", &[]).unwrap_err();
    assert_eq!(err.metric_label(), "syntax");
}

#[test]
fn environment_overrides_win_and_unknown_variables_are_refused() {
    let c = load(
        VALID,
        &[
            ("SHOAL_HTTP_LISTEN", "127.0.0.1:9999"),
            ("SHOAL_TIMING_WITHDRAW_GRACE_MS", "4500"),
            ("SHOAL_LEASE_VOTERS", "us-east, eu-west"),
            ("SHOAL_CHAOS_ENABLED", "false"),
            ("SHOAL_TRANSPORT_PEER_BYTES_PER_S_MAX", "1048576"),
            ("PATH", "/usr/bin"),
        ],
    )
    .unwrap();
    assert_eq!(c.transport.peer_bytes_per_s_max, 1_048_576);
    assert_eq!(c.http_listen.port(), 9999);
    assert_eq!(c.core.withdraw_grace_ms, 4500);
    assert_eq!(c.core.lease.voters.len(), 2);
    assert!(!c.chaos_enabled);

    let err = load(VALID, &[("SHOAL_HTTP_LISTN", "x")]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Syntax(m) if m.contains("listn")),
        "{err}"
    );
    let err = load(VALID, &[("SHOAL_NOPE", "1")]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Env { var, .. } if var == "SHOAL_NOPE"),
        "{err}"
    );
    let err = load(VALID, &[("SHOAL_REPLICA", "many")]).unwrap_err();
    assert!(err.to_string().contains("replica"), "{err}");
}
