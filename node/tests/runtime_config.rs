#![allow(clippy::unwrap_used)]
//! The configuration file: a full valid file, each kind of bad field named,
//! environment overrides, the layers' precedence, and the Kubernetes backend's keys.

use std::path::Path;

use shoal_node::runtime::config::{self, BackendConfig, ConfigFileError};

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
    assert_eq!(
        c.backend_dir(),
        Some(dir.path().join("standalone").as_path())
    );
    assert_eq!(c.backend_poll_ms(), Some(200));
    assert_eq!(c.clusterset, "default");
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

    let small_total = format!(
        "{VALID}\n[transport]\noutbound_queue_bytes_max = 2097152\noutbound_bytes_max = 1048576\n"
    );
    let err = load(&small_total, &[]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Field { field, reason } if field == "transport" && reason.contains("outbound_bytes_max (1048576) must be at least outbound_queue_bytes_max (2097152)")),
        "{err}"
    );
    let bytes = format!("{VALID}\n[transport]\ninbound_queue_bytes_max = 2097152\n");
    let limits = load(&bytes, &[]).expect("a valid byte bound").transport;
    assert_eq!(limits.inbound_queue_bytes_max, 2_097_152);
}

#[test]
fn unknown_keys_are_field_errors_that_name_the_key_and_bad_toml_is_a_syntax_error() {
    let err = load(&VALID.replace("[chaos]", "[chaos]\nenabeld = true"), &[]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Field { field, reason } if field == "chaos.enabeld" && reason.contains("enabled")),
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
        matches!(&err, ConfigFileError::Env { var, key, reason } if var == "SHOAL_HTTP_LISTN" && key == "http.listn" && reason.contains("listen")),
        "{err}"
    );
    let err = load(VALID, &[("SHOAL_NOPE", "1")]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Env { var, .. } if var == "SHOAL_NOPE"),
        "{err}"
    );
    let err = load(VALID, &[("SHOAL_REPLICA", "many")]).unwrap_err();
    assert!(err.to_string().contains("replica"), "{err}");
    assert!(
        matches!(&err, ConfigFileError::Env { var, key, reason } if var == "SHOAL_REPLICA" && key == "replica" && reason.contains("\"many\"")),
        "{err}"
    );
}

/// The environment error a load of `text` with `env` fails with: (variable, key).
fn env_error(text: &str, env: &[(&str, &str)]) -> (String, String) {
    match load(text, env) {
        Err(ConfigFileError::Env { var, key, .. }) => (var, key),
        other => panic!("expected an environment error, got {other:?}"),
    }
}

/// `VALID` with its `[backend]` section replaced by `backend`.
fn with_backend(backend: &str) -> String {
    let section = "[backend]\nkind = \"standalone\"\ndir = \"standalone\"\n";
    assert!(VALID.contains(section));
    VALID.replace(section, &format!("[backend]\n{backend}\n"))
}

#[test]
fn the_preset_is_overridden_by_the_file_and_the_file_by_the_environment() {
    // VALID chooses lan and sets no probe_rtt_ms: the preset's.
    let preset = load(VALID, &[]).unwrap();
    assert_eq!(preset.core.swim.probe_rtt_ms, 150);
    assert_eq!(preset.core.lease.lease_ms, 4_000);
    // Without `preset`, wan.
    let wan = load(&VALID.replace("preset = \"lan\"\n", ""), &[]).unwrap();
    assert_eq!(wan.core.swim.probe_rtt_ms, 400);
    assert_eq!(wan.core.lease.lease_ms, 10_000);
    // The environment chooses the preset too, over the file's.
    let env_preset = load(VALID, &[("SHOAL_PRESET", "wan")]).unwrap();
    assert_eq!(env_preset.core.swim.probe_rtt_ms, 400);
    assert_eq!(
        env_preset.core.withdraw_grace_ms, 3_000,
        "the file's key stays"
    );

    let file = VALID.replace(
        "withdraw_grace_ms = 3000",
        "withdraw_grace_ms = 3000\nprobe_rtt_ms = 120",
    );
    assert_eq!(load(&file, &[]).unwrap().core.swim.probe_rtt_ms, 120);
    let env = load(&file, &[("SHOAL_TIMING_PROBE_RTT_MS", "130")]).unwrap();
    assert_eq!(env.core.swim.probe_rtt_ms, 130);
    // Keys the file and the environment leave alone keep the preset's.
    assert_eq!(env.core.swim.suspect_to_down_ms, 1_500);
}

#[test]
fn unknown_nested_keys_are_named_by_their_path() {
    assert_eq!(
        bad_field(&VALID.replace("withdraw_grace_ms = 3000", "probe_period = 1000")),
        "timing.probe_period"
    );
    assert_eq!(
        bad_field(&VALID.replace("addr = \"127.0.0.1:7300\"", "adress = \"127.0.0.1:7300\"")),
        "seeds[1].adress"
    );
    assert_eq!(
        bad_field(&format!("{VALID}\n[htpp]\nlisten = \"x\"\n")),
        "htpp"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_named_by_its_path() {
    let err = load(
        &VALID.replace("withdraw_grace_ms = 3000", "withdraw_grace_ms = \"soon\""),
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Field { field, reason } if field == "timing.withdraw_grace_ms" && reason.contains("string")),
        "{err}"
    );
    assert_eq!(
        bad_field(&VALID.replace("replica = 1\n", "replica = \"one\"\n")),
        "seeds[1].replica"
    );
    assert_eq!(
        bad_field(&VALID.replace("enabled = true", "enabled = 1")),
        "chaos.enabled"
    );
    // The file is typed: a number written as a string is not read as one.
    assert_eq!(
        bad_field(&VALID.replace("replica = 0\n", "replica = \"0\"\n")),
        "replica"
    );
}

#[test]
fn missing_and_unknown_required_keys_are_named() {
    let err = load(&VALID.replace("data_dir = \"data\"\n", ""), &[]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Field { field, reason } if field == "data_dir" && reason.contains("missing")),
        "{err}"
    );
    assert_eq!(
        bad_field(&VALID.replace("dir = \"standalone\"\n", "")),
        "backend.dir"
    );
    assert_eq!(
        bad_field(&with_backend("kind = \"docker\"")),
        "backend.kind"
    );
    assert_eq!(
        bad_field(&VALID.replace(
            "data_dir = \"data\"",
            "data_dir = \"data\"\nnetwork = \"mesh\""
        )),
        "network"
    );
}

#[test]
fn unknown_environment_variables_are_named() {
    assert_eq!(
        env_error(VALID, &[("SHOAL_TIMING_PROBE_PERIOD", "1000")]),
        (
            "SHOAL_TIMING_PROBE_PERIOD".to_owned(),
            "timing.probe_period".to_owned()
        )
    );
    assert_eq!(
        env_error(VALID, &[("SHOAL_BACKEND_POLL", "100")]),
        ("SHOAL_BACKEND_POLL".to_owned(), "backend.poll".to_owned())
    );
    let err = load(VALID, &[("SHOAL_HTTPLISTEN", "x")]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Env { var, reason, .. } if var == "SHOAL_HTTPLISTEN" && reason.contains("timing")),
        "the message lists the top-level keys: {err}"
    );
    // Variables without the prefix are not settings.
    assert!(load(VALID, &[("SHOALX", "1"), ("HOME", "/root")]).is_ok());
}

#[test]
fn an_environment_value_is_read_as_its_key_type_and_a_bad_one_names_the_variable() {
    let c = load(
        VALID,
        &[
            ("SHOAL_REPLICA", "2"),
            ("SHOAL_MEMBERS_EXPECTED", " 7 "),
            ("SHOAL_CLUSTERSET", "prod.example"),
            ("SHOAL_DATA_DIR", "elsewhere"),
            ("SHOAL_LOG_FILTER", "true"),
        ],
    )
    .unwrap();
    assert_eq!(c.replica.0, 2);
    assert!(!c.core.publisher, "replica 2 does not publish by default");
    assert_eq!(c.core.members_expected, 7);
    assert_eq!(c.clusterset, "prod.example");
    assert!(c.data_dir.ends_with("elsewhere") && c.data_dir.is_absolute());
    assert_eq!(c.log, "true", "a string key takes the text as it is");

    assert_eq!(
        env_error(VALID, &[("SHOAL_TIMING_WITHDRAW_GRACE_MS", "-1")]),
        (
            "SHOAL_TIMING_WITHDRAW_GRACE_MS".to_owned(),
            "timing.withdraw_grace_ms".to_owned()
        )
    );
    // A value that parses but fails validation names the variable too.
    assert_eq!(
        env_error(VALID, &[("SHOAL_LISTEN", "localhost")]),
        ("SHOAL_LISTEN".to_owned(), "listen".to_owned())
    );
    assert_eq!(
        env_error(VALID, &[("SHOAL_LEASE_VOTERS", "us-east,EU")]),
        (
            "SHOAL_LEASE_VOTERS".to_owned(),
            "lease.voters[1]".to_owned()
        )
    );
}

#[test]
fn the_clusterset_is_a_dns_subdomain() {
    let c = load(&format!("clusterset = \"mcs.example-1\"\n{VALID}"), &[]).unwrap();
    assert_eq!(c.clusterset, "mcs.example-1");
    assert!(c.summary().contains("clusterset  mcs.example-1"));
    for bad in ["Prod", "a..b", "-a", "a-", "", "a_b"] {
        assert_eq!(
            bad_field(&format!("clusterset = \"{bad}\"\n{VALID}")),
            "clusterset",
            "{bad:?}"
        );
    }
    let long = format!("clusterset = \"{}\"\n{VALID}", ["a"; 128].join("."));
    assert_eq!(bad_field(&long), "clusterset");
}

#[test]
fn the_kubernetes_backend_has_defaults_and_refuses_the_publisher_key() {
    let text = with_backend("kind = \"kubernetes\"").replace("replica = 0\n", "replica = 1\n");
    let c = load(&text, &[]).unwrap();
    assert_eq!(
        c.backend,
        BackendConfig::Kubernetes {
            kubeconfig: None,
            context: None,
            namespace: "shoal-system".to_owned(),
            identity: "us-east-1".to_owned(),
            leader_lease_ms: 15_000,
            leader_renew_ms: 10_000,
            leader_retry_ms: 2_000,
        }
    );
    assert!(!c.core.publisher, "every replica starts as a standby");
    assert_eq!(c.backend_dir(), None);
    assert_eq!(c.backend_poll_ms(), None);
    let summary = c.summary();
    assert!(summary.contains("us-east/1 (leader-elected)"), "{summary}");
    assert!(
        summary.contains("kubernetes in-cluster, namespace shoal-system, identity us-east-1"),
        "{summary}"
    );

    let kind_from_env = load(
        &VALID.replace("dir = \"standalone\"\n", ""),
        &[("SHOAL_BACKEND_KIND", "kubernetes")],
    )
    .unwrap();
    assert!(matches!(
        kind_from_env.backend,
        BackendConfig::Kubernetes { .. }
    ));

    let publisher = format!(
        "publisher = true\n{}",
        with_backend("kind = \"kubernetes\"")
    );
    assert_eq!(bad_field(&publisher), "publisher");
    let standby = publisher.replace("publisher = true", "publisher = false");
    assert!(load(&standby, &[]).is_ok());
}

#[test]
fn a_relative_kubeconfig_is_relative_to_the_file() {
    let dir = tls_dir();
    std::fs::create_dir(dir.path().join("kube")).unwrap();
    std::fs::write(dir.path().join("kube/config"), "x").unwrap();
    let text = with_backend(
        "kind = \"kubernetes\"\nkubeconfig = \"kube/config\"\ncontext = \"kind-us-east\"\nnamespace = \"mcs\"",
    );
    let c = config::load(&write(dir.path(), &text), Vec::new()).unwrap();
    let BackendConfig::Kubernetes {
        kubeconfig,
        context,
        namespace,
        ..
    } = &c.backend
    else {
        panic!("expected kubernetes, got {:?}", c.backend);
    };
    assert_eq!(
        kubeconfig.as_deref(),
        Some(dir.path().join("kube/config").as_path())
    );
    assert_eq!(context.as_deref(), Some("kind-us-east"));
    assert_eq!(namespace, "mcs");
    assert!(c.summary().contains("context kind-us-east"));

    let bad_in_dir = |text: &str| match config::load(&write(dir.path(), text), Vec::new()) {
        Err(ConfigFileError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    };
    assert_eq!(
        bad_in_dir(&text.replace("kube/config", "kube/missing")),
        "backend.kubeconfig"
    );
    assert_eq!(
        bad_in_dir(&text.replace("\"mcs\"", "\"MCS\"")),
        "backend.namespace"
    );
    assert_eq!(
        bad_in_dir(&text.replace("\"kind-us-east\"", "\"\"")),
        "backend.context"
    );
}

#[test]
fn the_leader_election_identity_is_the_key_else_pod_name_else_cluster_and_replica() {
    let text = with_backend("kind = \"kubernetes\"");
    let identity = |c: &config::RuntimeConfig| match &c.backend {
        BackendConfig::Kubernetes { identity, .. } => identity.clone(),
        other => panic!("expected kubernetes, got {other:?}"),
    };
    let from_pod = load(&text, &[("POD_NAME", "shoal-us-east-0")]).unwrap();
    assert_eq!(identity(&from_pod), "shoal-us-east-0");
    let keyed = text.replace(
        "kind = \"kubernetes\"",
        "kind = \"kubernetes\"\nidentity = \"me\"",
    );
    assert_eq!(
        identity(&load(&keyed, &[("POD_NAME", "shoal-us-east-0")]).unwrap()),
        "me"
    );
    assert_eq!(identity(&load(&text, &[]).unwrap()), "us-east-0");
    assert_eq!(
        env_error(&text, &[("POD_NAME", "two words")]),
        ("POD_NAME".to_owned(), "backend.identity".to_owned())
    );
    assert_eq!(
        bad_field(&keyed.replace("\"me\"", "\"\"")),
        "backend.identity"
    );
}

#[test]
fn leader_timing_must_nest_and_errors_name_the_field() {
    let with = |keys: &str| with_backend(&format!("kind = \"kubernetes\"\n{keys}"));
    let err = load(&with("leader_renew_ms = 15000"), &[]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Field { field, reason } if field == "backend.leader_renew_ms" && reason.contains("leader_lease_ms")),
        "{err}"
    );
    assert_eq!(
        bad_field(&with("leader_retry_ms = 10000")),
        "backend.leader_retry_ms"
    );
    assert_eq!(
        bad_field(&with(
            "leader_lease_ms = 500\nleader_renew_ms = 400\nleader_retry_ms = 200"
        )),
        "backend.leader_lease_ms"
    );
    assert_eq!(
        bad_field(&with("leader_retry_ms = 0")),
        "backend.leader_retry_ms"
    );
    let ok = load(
        &with("leader_lease_ms = 6000\nleader_renew_ms = 4000\nleader_retry_ms = 1000"),
        &[],
    )
    .unwrap();
    assert!(matches!(
        ok.backend,
        BackendConfig::Kubernetes {
            leader_lease_ms: 6_000,
            leader_renew_ms: 4_000,
            leader_retry_ms: 1_000,
            ..
        }
    ));
    assert_eq!(
        env_error(&with(""), &[("SHOAL_BACKEND_LEADER_RENEW_MS", "20000")]),
        (
            "SHOAL_BACKEND_LEADER_RENEW_MS".to_owned(),
            "backend.leader_renew_ms".to_owned()
        )
    );
}

#[test]
fn each_backend_kind_refuses_the_other_kinds_keys() {
    let err = load(
        &with_backend("kind = \"kubernetes\"\ndir = \"standalone\""),
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Field { field, reason } if field == "backend.dir" && reason.contains("kubernetes")),
        "{err}"
    );
    assert_eq!(
        bad_field(&with_backend("kind = \"kubernetes\"\npoll_ms = 100")),
        "backend.poll_ms"
    );
    let err = load(
        &with_backend("kind = \"standalone\"\ndir = \"standalone\"\nnamespace = \"mcs\""),
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Field { field, reason } if field == "backend.namespace" && reason.contains("standalone")),
        "{err}"
    );
    // The default kind is standalone, which takes no kubeconfig.
    assert_eq!(
        bad_field(&with_backend("dir = \"standalone\"\nkubeconfig = \"k\"")),
        "backend.kubeconfig"
    );
    // The environment switches the kind; then the file's standalone key is refused.
    let err = load(VALID, &[("SHOAL_BACKEND_KIND", "kubernetes")]).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Field { field, .. } if field == "backend.dir"),
        "{err}"
    );
}

#[test]
fn the_standalone_bounds_are_configurable_and_checked() {
    let c = load(
        &with_backend("dir = \"standalone\"\nout_files_max = 10\nsymlinks_outside = true"),
        &[],
    )
    .unwrap();
    let config::BackendConfig::Standalone { limits, .. } = &c.backend else {
        panic!("a standalone backend");
    };
    assert_eq!(
        *limits,
        config::StandaloneLimits {
            out_files_max: 10,
            symlinks_outside: true
        }
    );
    assert!(
        c.summary().contains("out/ at most 10 files"),
        "{}",
        c.summary()
    );
    let c = load(VALID, &[]).unwrap();
    let config::BackendConfig::Standalone { limits, .. } = &c.backend else {
        panic!("a standalone backend");
    };
    assert_eq!(*limits, config::StandaloneLimits::default());
    assert_eq!(
        bad_field(&with_backend("dir = \"standalone\"\nout_files_max = 0")),
        "backend.out_files_max"
    );
    assert_eq!(
        bad_field(&with_backend("kind = \"kubernetes\"\nout_files_max = 10")),
        "backend.out_files_max"
    );
}

/// `VALID` with its `[http]` section replaced by `http`.
fn with_http(http: &str) -> String {
    let section = "[http]\nlisten = \"127.0.0.1:7101\"\n";
    assert!(VALID.contains(section));
    VALID.replace(section, &format!("[http]\n{http}\n"))
}

#[test]
fn the_http_section_has_default_limits_and_takes_its_keys() {
    use shoal_node::runtime::http::ServerLimits;
    use std::time::Duration;

    let c = load(VALID, &[]).unwrap();
    assert_eq!(c.http_health_listen, None);
    assert_eq!(c.http_limits, ServerLimits::default());
    let c = load(
        &with_http(
            "listen = \"127.0.0.1:7101\"\nhealth_listen = \"127.0.0.1:7102\"\n\
             header_read_timeout_ms = 3000\nidle_timeout_ms = 1000\n\
             connections_max = 32\nconnections_per_client_max = 4",
        ),
        &[],
    )
    .unwrap();
    assert_eq!(
        c.http_health_listen,
        Some("127.0.0.1:7102".parse().unwrap())
    );
    let limits = c.http_limits;
    assert_eq!(limits.header_read_timeout, Duration::from_millis(3000));
    assert_eq!(limits.idle_timeout, Duration::from_millis(1000));
    assert_eq!(
        (limits.connections_max, limits.connections_per_client_max),
        (32, 4)
    );
    // The keys without one keep their defaults.
    assert_eq!(limits.health, ServerLimits::default().health);
    assert_eq!(limits.reply_wait, ServerLimits::default().reply_wait);
    let summary = c.summary();
    assert!(
        summary.contains("127.0.0.1:7101, health 127.0.0.1:7102, head within 3000 ms, idle 1000 ms, 32 connections (4 per client)"),
        "{summary}"
    );
    let c = load(
        VALID,
        &[
            ("SHOAL_HTTP_HEALTH_LISTEN", "0.0.0.0:7102"),
            ("SHOAL_HTTP_CONNECTIONS_PER_CLIENT_MAX", "2"),
        ],
    )
    .unwrap();
    assert_eq!(c.http_health_listen, Some("0.0.0.0:7102".parse().unwrap()));
    assert_eq!(c.http_limits.connections_per_client_max, 2);
}

#[test]
fn http_limits_out_of_range_name_their_field() {
    let listen = "listen = \"127.0.0.1:7101\"\n";
    let reason = |http: &str, field: &str| -> String {
        match load(&with_http(&format!("{listen}{http}")), &[]) {
            Err(ConfigFileError::Field { field: f, reason }) if f == field => reason,
            other => panic!("expected a field error naming {field}, got {other:?}"),
        }
    };
    assert!(reason("health_listen = \"localhost\"", "http.health_listen").contains("localhost"));
    assert!(reason("health_listen = \"127.0.0.1:7101\"", "http.health_listen").contains("its own"));
    assert!(
        reason("header_read_timeout_ms = 50", "http.header_read_timeout_ms")
            .contains("100..=60000")
    );
    assert!(
        reason(
            "header_read_timeout_ms = 60001",
            "http.header_read_timeout_ms"
        )
        .contains("100..=60000")
    );
    let idle = reason(
        "header_read_timeout_ms = 1000\nidle_timeout_ms = 1001",
        "http.idle_timeout_ms",
    );
    assert!(
        idle.contains("100..=1000") && idle.contains("http.header_read_timeout_ms"),
        "{idle}"
    );
    assert!(reason("idle_timeout_ms = 99", "http.idle_timeout_ms").contains("99"));
    assert!(reason("connections_max = 0", "http.connections_max").contains("1..=16384"));
    assert!(reason("connections_max = 16385", "http.connections_max").contains("1..=16384"));
    let per_client = reason(
        "connections_max = 4\nconnections_per_client_max = 5",
        "http.connections_per_client_max",
    );
    assert!(per_client.contains("http.connections_max"), "{per_client}");
    assert!(
        reason(
            "connections_per_client_max = 0",
            "http.connections_per_client_max"
        )
        .contains("1..=")
    );
    // An environment override out of range names its variable.
    let (var, key) = env_error(VALID, &[("SHOAL_HTTP_IDLE_TIMEOUT_MS", "999999")]);
    assert_eq!(
        (var.as_str(), key.as_str()),
        ("SHOAL_HTTP_IDLE_TIMEOUT_MS", "http.idle_timeout_ms")
    );
    // Two port-0 listeners on one address are two sockets: allowed.
    let zero = "listen = \"127.0.0.1:0\"\nhealth_listen = \"127.0.0.1:0\"";
    assert!(load(&with_http(zero), &[]).is_ok());
}

#[test]
fn dns_is_off_without_a_dns_section_and_on_with_one_in_standalone() {
    use shoal_node::runtime::dns::{DnsLimits, RateLimit};
    use std::time::Duration;

    let c = load(VALID, &[]).unwrap();
    assert_eq!(c.dns, None, "no [dns]: no DNS server");
    assert!(c.summary().contains("dns         off"), "{}", c.summary());
    let c = load(&format!("{VALID}\n[dns]\n"), &[]).unwrap();
    let dns = c
        .dns
        .expect("an empty [dns] enables it with the standalone backend");
    assert_eq!(dns.listen, "127.0.0.1:8053".parse().unwrap());
    assert_eq!(dns.limits, DnsLimits::default());
    let c = load(
        &format!(
            "{VALID}\n[dns]\nlisten = \"127.0.0.1:0\"\nqueries_per_second = 50\nburst = 10\n\
             tcp_connections_max = 4\ntcp_idle_timeout_ms = 1000\n"
        ),
        &[],
    )
    .unwrap();
    let dns = c.dns.unwrap();
    assert_eq!(dns.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(
        dns.limits,
        DnsLimits {
            rate: RateLimit {
                burst: 10,
                interval: Duration::from_millis(20)
            },
            tcp_connections_max: 4,
            tcp_idle_timeout: Duration::from_secs(1),
        }
    );
    assert!(
        c.summary().contains(
            "dns         127.0.0.1:0 (UDP and TCP), 50 queries/s per client (burst 10), \
             4 TCP connections, idle 1000 ms"
        ),
        "{}",
        c.summary()
    );
    let c = load(&format!("{VALID}\n[dns]\nenabled = false\n"), &[]).unwrap();
    assert_eq!(c.dns, None);
}

#[test]
fn dns_is_set_by_the_environment_and_off_by_default_with_kubernetes() {
    let c = load(VALID, &[("SHOAL_DNS_LISTEN", "127.0.0.1:5300")]).unwrap();
    assert_eq!(c.dns.unwrap().listen, "127.0.0.1:5300".parse().unwrap());
    let c = load(
        &format!("{VALID}\n[dns]\n"),
        &[("SHOAL_DNS_BURST", "7"), ("SHOAL_DNS_ENABLED", "true")],
    )
    .unwrap();
    assert_eq!(c.dns.unwrap().limits.rate.burst, 7);
    let kubernetes = format!("{}\n[dns]\n", with_backend("kind = \"kubernetes\""));
    let c = load(&kubernetes, &[]).unwrap();
    assert_eq!(c.dns, None, "CoreDNS serves clusterset.local in Kubernetes");
    let c = load(&kubernetes, &[("SHOAL_DNS_ENABLED", "true")]).unwrap();
    assert!(c.dns.is_some(), "unless asked for");
    match load(VALID, &[("SHOAL_DNS_BURST", "many")]) {
        Err(ConfigFileError::Env { var, key, .. }) => {
            assert_eq!(
                (var.as_str(), key.as_str()),
                ("SHOAL_DNS_BURST", "dns.burst")
            );
        }
        other => panic!("expected an env error, got {other:?}"),
    }
    match load(VALID, &[("SHOAL_DNS_LISTEN", "localhost")]) {
        Err(ConfigFileError::Env { var, key, .. }) => {
            assert_eq!(
                (var.as_str(), key.as_str()),
                ("SHOAL_DNS_LISTEN", "dns.listen")
            );
        }
        other => panic!("expected an env error, got {other:?}"),
    }
}

#[test]
fn dns_fields_out_of_range_name_their_field() {
    let reason = |dns: &str, field: &str| -> String {
        match load(&format!("{VALID}\n[dns]\n{dns}\n"), &[]) {
            Err(ConfigFileError::Field { field: f, reason }) if f == field => reason,
            other => panic!("expected a field error naming {field}, got {other:?}"),
        }
    };
    assert!(reason("listen = \"localhost:53\"", "dns.listen").contains("localhost:53"));
    assert!(reason("listen = \"127.0.0.1:7101\"", "dns.listen").contains("http.listen"));
    assert!(reason("listen = \"127.0.0.1:7100\"", "dns.listen").contains("is listen's address"));
    assert!(reason("queries_per_second = 0", "dns.queries_per_second").contains("1..=1000000"));
    assert!(reason("burst = 1000001", "dns.burst").contains("1..=1000000"));
    assert!(reason("tcp_connections_max = 0", "dns.tcp_connections_max").contains("1..=16384"));
    assert!(reason("tcp_idle_timeout_ms = 99", "dns.tcp_idle_timeout_ms").contains("100..=60000"));
    assert!(
        reason("enabled = false\nburst = 0", "dns.burst").contains("1..=1000000"),
        "a disabled section is still checked"
    );
    assert_eq!(
        bad_field(&format!("{VALID}\n[dns]\nport = 53\n")),
        "dns.port"
    );
}
