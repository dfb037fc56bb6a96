//! `shoal config check FILE` runs every check `shoal run --config FILE` runs before it
//! binds a socket: for each broken config, both exit non-zero with the same message, and
//! run never gets as far as starting; a valid config passes both (run starts, and is
//! killed); junk in the ClusterSet directory is skipped with a warning by both.

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};

/// How long one `shoal` process may take to fail, or to start.
const PROCESS_DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);
/// The line `shoal run` logs once its sockets are bound.
const STARTED: &str = "shoal node starting";

/// The `shoal` binary of this build (`cargo nextest run --workspace` builds it beside
/// this test's own executable), or `$SHOAL_BIN`.
fn shoal_binary() -> PathBuf {
    shoal_tests::mesh::shoal_binary().expect("the shoal binary")
}

/// `shoal ARGS` with no `SHOAL_*` overrides from this process's environment.
fn shoal(args: &[&str]) -> Command {
    let mut command = Command::new(shoal_binary());
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SHOAL_") {
            command.env_remove(name);
        }
    }
    command
}

fn run_ok(args: &[&str]) {
    let output = shoal(args).output().expect("shoal runs");
    assert!(
        output.status.success(),
        "shoal {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What a finished (or killed) process printed.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// The error line `main` prints: `shoal: ...`.
    fn error_line(&self) -> Option<&str> {
        self.stderr.lines().find(|line| line.starts_with("shoal: "))
    }
}

/// A `shoal` process whose output goes to files, so that it never blocks on a pipe.
struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    fn spawn(mut command: Command, dir: &Path, name: &str) -> Process {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = command
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("an output file"))
            .stderr(fs::File::create(&stderr).expect("an output file"))
            .spawn()
            .expect("shoal starts");
        Process {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> (String, String) {
        (
            fs::read_to_string(&self.stdout).unwrap_or_default(),
            fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }

    /// Waits for the process to exit, or for `stop_when` to hold on its output; kills
    /// it then, or at the deadline.
    #[allow(clippy::disallowed_methods)] // a real process's deadline is wall-clock time
    fn wait_until(mut self, stop_when: impl Fn(&str, &str) -> bool) -> Finished {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited on") {
                break status;
            }
            let (stdout, stderr) = self.output();
            if stop_when(&stdout, &stderr) || Instant::now() >= deadline {
                // Only this test's own child, by its handle.
                let _ = self.child.kill();
                break self.child.wait().expect("the killed child can be reaped");
            }
            std::thread::sleep(POLL);
        };
        let (stdout, stderr) = self.output();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

/// A free loopback port (UDP or TCP), released for the node to take.
fn free_port(udp: bool) -> u16 {
    if udp {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
        socket.local_addr().expect("bound").port()
    } else {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a TCP port");
        listener.local_addr().expect("bound").port()
    }
}

/// The TLS paths of one config; everything else is the same for all.
#[derive(Clone)]
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    clusterset_dir: PathBuf,
}

/// The ClusterSet: a CA, east and west issued by `shoal certs`, and the set directory.
struct Pki {
    root: PathBuf,
    ca: PathBuf,
    set: PathBuf,
}

impl Pki {
    fn new(root: &Path) -> Pki {
        let ca = root.join("ca");
        let set = root.join("set");
        let text = |p: &Path| p.to_str().expect("UTF-8 paths").to_owned();
        run_ok(&["certs", "init", "--dir", &text(&ca), "--days", "30"]);
        for cluster in ["east", "west"] {
            run_ok(&[
                "certs",
                "issue",
                "--ca",
                &text(&ca),
                "--cluster",
                cluster,
                "--out",
                &text(&set),
                "--days",
                "30",
            ]);
        }
        fs::copy(ca.join("ca.crt"), set.join("ca.crt")).expect("copy the CA");
        Pki {
            root: root.to_owned(),
            ca,
            set,
        }
    }

    fn valid(&self) -> Tls {
        Tls {
            ca: self.ca.join("ca.crt"),
            cert: self.set.join("east.crt"),
            key: self.set.join("east.key"),
            clusterset_dir: self.set.clone(),
        }
    }

    /// East with a certificate and key written by rcgen into `dir`, signed by the CA.
    fn custom(
        &self,
        dir: &str,
        params: CertificateParams,
        alg: &'static SignatureAlgorithm,
    ) -> Tls {
        let out = self.root.join(dir);
        fs::create_dir_all(&out).expect("a directory");
        let ca_key = KeyPair::from_pem(&read(&self.ca.join("ca.key"))).expect("the CA key");
        let issuer = Issuer::from_ca_cert_pem(&read(&self.ca.join("ca.crt")), ca_key)
            .expect("the CA certificate");
        let key = KeyPair::generate_for(alg).expect("a key");
        let cert = params.signed_by(&key, &issuer).expect("a certificate");
        let (cert_path, key_path) = (out.join("east.crt"), out.join("east.key"));
        fs::write(&cert_path, cert.pem()).expect("write the certificate");
        fs::write(&key_path, key.serialize_pem()).expect("write the key");
        Tls {
            cert: cert_path,
            key: key_path,
            ..self.valid()
        }
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("a PEM file")
}

/// A cluster certificate's parameters: `sans` as DNS names, common name "east",
/// valid from `from` to `until` (year, month, day).
fn params(sans: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> CertificateParams {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).expect("valid names");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "east");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    params
}

/// Writes `dir/shoal.toml` for cluster east with `tls`, on free loopback ports.
fn write_config(dir: &Path, tls: &Tls) -> PathBuf {
    fs::create_dir_all(dir).expect("a case directory");
    let quic = free_port(true);
    let http = free_port(false);
    let d = dir.display();
    let text = format!(
        "cluster = \"east\"\npreset = \"lan\"\nlisten = \"127.0.0.1:{quic}\"\n\
         data_dir = \"{d}/data\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n[tls]\n\
         ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nclusterset_dir = \"{}\"\n\n\
         [backend]\nkind = \"standalone\"\ndir = \"{d}/standalone\"\n",
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display(),
        tls.clusterset_dir.display(),
    );
    let file = dir.join("shoal.toml");
    fs::write(&file, text).expect("write the config");
    file
}

/// Runs `shoal config check FILE` and `shoal run --config FILE`; run is stopped (and
/// killed) once it logs that it started.
fn check_and_run(dir: &Path, file: &Path) -> (Finished, Finished) {
    let file = file.to_str().expect("a UTF-8 path");
    let check = Process::spawn(shoal(&["config", "check", file]), dir, "check");
    let check = check.wait_until(|_, _| false);
    let run = Process::spawn(shoal(&["run", "--config", file]), dir, "run");
    let run = run.wait_until(|stdout, stderr| stdout.contains(STARTED) || stderr.contains(STARTED));
    (check, run)
}

/// The broken configs: a name, the TLS paths, and text the error must contain.
fn broken_cases(pki: &Pki) -> Vec<(&'static str, Tls, &'static str)> {
    let valid = pki.valid();
    let past = ((2001, 1, 1), (2001, 2, 1));
    let future = ((2200, 1, 1), (2201, 1, 1));
    let now = ((2000, 1, 1), (2200, 1, 1));
    let name = ["east.cluster.shoal"];
    let other_ca = pki.root.join("other-ca");
    let other_out = pki.root.join("other-set");
    let text = |p: &Path| p.to_str().expect("UTF-8 paths").to_owned();
    run_ok(&["certs", "init", "--dir", &text(&other_ca)]);
    run_ok(&[
        "certs",
        "issue",
        "--ca",
        &text(&other_ca),
        "--cluster",
        "east",
        "--out",
        &text(&other_out),
    ]);
    vec![
        (
            "key_mismatch",
            Tls {
                key: pki.set.join("west.key"),
                ..valid.clone()
            },
            "the key does not match the certificate",
        ),
        (
            "expired",
            pki.custom(
                "expired",
                params(&name, past.0, past.1),
                &rcgen::PKCS_ED25519,
            ),
            "expired",
        ),
        (
            "not_yet_valid",
            pki.custom(
                "future",
                params(&name, future.0, future.1),
                &rcgen::PKCS_ED25519,
            ),
            "not trusted by the ClusterSet CA",
        ),
        (
            "other_ca",
            Tls {
                cert: other_out.join("east.crt"),
                key: other_out.join("east.key"),
                ..valid.clone()
            },
            "not trusted by the ClusterSet CA",
        ),
        (
            "other_cluster",
            Tls {
                cert: pki.set.join("west.crt"),
                key: pki.set.join("west.key"),
                ..valid.clone()
            },
            "tls.cert names cluster west, but the config says cluster = east",
        ),
        (
            "no_san",
            pki.custom("nosan", params(&[], now.0, now.1), &rcgen::PKCS_ED25519),
            "no subjectAltName",
        ),
        (
            "p256",
            pki.custom(
                "p256",
                params(&name, now.0, now.1),
                &rcgen::PKCS_ECDSA_P256_SHA256,
            ),
            "the key is not ed25519",
        ),
        (
            "cert_as_key",
            Tls {
                key: pki.set.join("east.crt"),
                ..valid.clone()
            },
            "not a PKCS#8 ed25519 key",
        ),
        (
            "leaf_as_ca",
            Tls {
                ca: pki.set.join("west.crt"),
                ..valid
            },
            "not trusted by the ClusterSet CA",
        ),
    ]
}

#[test]
fn config_check_refuses_exactly_what_run_refuses_before_binding() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let pki = Pki::new(work.path());
    let mut failures = Vec::new();
    for (case, tls, expected) in broken_cases(&pki) {
        let dir = work.path().join(case);
        let file = write_config(&dir, &tls);
        let (check, run) = check_and_run(&dir, &file);
        let (check_error, run_error) = (check.error_line(), run.error_line());
        let same = check_error.is_some() && check_error == run_error;
        let named = check_error.is_some_and(|e| e.contains(expected));
        let run_started = run.stdout.contains(STARTED) || run.stderr.contains(STARTED);
        if check.status.success() || run.status.success() || !same || !named || run_started {
            failures.push(format!(
                "{case}: expected both to fail with {expected:?}\n  check: {:?} {check_error:?}\n  \
                 run: {:?} {run_error:?} (started: {run_started})\n  run stdout: {}",
                check.status, run.status, run.stdout
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_valid_config_passes_both_and_junk_in_the_clusterset_dir_is_a_warning() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let pki = Pki::new(work.path());

    let dir = work.path().join("valid");
    let file = write_config(&dir, &pki.valid());
    let (check, run) = check_and_run(&dir, &file);
    assert!(check.status.success(), "{check:?}");
    assert!(check.stdout.contains("ok"), "{check:?}");
    assert!(check.stdout.contains("trusted     east, west"), "{check:?}");
    assert!(!check.stdout.contains("warning"), "{check:?}");
    assert!(
        run.stdout.contains(STARTED) || run.stderr.contains(STARTED),
        "run did not start: {run:?}"
    );

    // A junk certificate file and a non-certificate file in the ClusterSet directory.
    let junk_set = work.path().join("junk-set");
    fs::create_dir_all(&junk_set).expect("a directory");
    for file in ["ca.crt", "east.crt", "west.crt"] {
        fs::copy(pki.set.join(file), junk_set.join(file)).expect("copy a certificate");
    }
    fs::write(junk_set.join("junk.crt"), "not a certificate\n").expect("write junk");
    fs::write(junk_set.join("notes.txt"), "ignored\n").expect("write notes");
    let tls = Tls {
        clusterset_dir: junk_set.clone(),
        ..pki.valid()
    };
    let dir = work.path().join("junk");
    let file = write_config(&dir, &tls);
    let (check, run) = check_and_run(&dir, &file);
    assert!(check.status.success(), "{check:?}");
    let warnings: Vec<&str> = check
        .stdout
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{check:?}");
    assert!(
        warnings[0].contains("clusterset certificate skipped") && warnings[0].contains("junk.crt"),
        "{check:?}"
    );
    assert!(check.stdout.contains("trusted     east, west"), "{check:?}");
    let log = format!("{}{}", run.stdout, run.stderr);
    assert!(log.contains(STARTED), "run did not start: {run:?}");
    assert!(
        log.contains("clusterset certificate skipped") && log.contains("junk.crt"),
        "run did not warn: {run:?}"
    );
}

#[test]
fn run_serves_clusterset_local_with_a_dns_section_and_names_dns_listen_when_taken() {
    use shoal_tests::dns::{RecordType, ResponseCode};

    let work = tempfile::tempdir().expect("a temporary directory");
    let pki = Pki::new(work.path());
    let with_dns = |name: &str, port: u16| {
        let dir = work.path().join(name);
        let file = write_config(&dir, &pki.valid());
        let mut text = read(&file);
        text.push_str(&format!("\n[dns]\nlisten = \"127.0.0.1:{port}\"\n"));
        fs::write(&file, text).expect("write the config");
        (dir, file)
    };

    // Served: the zone's SOA once the node has started (SERVFAIL until its first zone).
    let port = free_port(true);
    let (dir, file) = with_dns("dns", port);
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let answered = std::cell::RefCell::new(None);
    let run = Process::spawn(
        shoal(&["run", "--config", file.to_str().expect("UTF-8")]),
        &dir,
        "run",
    );
    let run = run.wait_until(|stdout, stderr| {
        if !(stdout.contains(STARTED) || stderr.contains(STARTED)) {
            return false;
        }
        let soa = shoal_tests::dns::query(server, "clusterset.local.", RecordType::SOA);
        let nx = shoal_tests::dns::query(server, "web.shop.svc.clusterset.local.", RecordType::A);
        match (soa, nx) {
            (Ok(soa), Ok(nx)) if soa.rcode == ResponseCode::NoError => {
                answered.replace(Some(nx.rcode));
                true
            }
            _ => false,
        }
    });
    assert_eq!(
        answered.into_inner(),
        Some(ResponseCode::NXDomain),
        "no DNS answers from shoal run: {run:?}"
    );

    // Taken: run fails before it starts, naming the field.
    let port = free_port(true);
    let taken = UdpSocket::bind(("127.0.0.1", port)).expect("hold the port");
    let (dir, file) = with_dns("dns-taken", port);
    let run = Process::spawn(
        shoal(&["run", "--config", file.to_str().expect("UTF-8")]),
        &dir,
        "run",
    );
    let run = run.wait_until(|_, _| false);
    assert!(!run.status.success(), "{run:?}");
    let line = run.error_line().unwrap_or_default();
    assert!(
        line.contains(&format!("dns.listen 127.0.0.1:{port}")),
        "the error names dns.listen: {run:?}"
    );
    drop(taken);
}
