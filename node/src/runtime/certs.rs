//! The ClusterSet CA and per-cluster certificates.
//!
//! One ed25519 key per cluster serves both its TLS identity and its record signatures.
//! A cluster's certificate, signed by the ClusterSet CA, names the cluster in exactly one
//! DNS SAN, `<cluster-id>.cluster.shoal`, and in its common name. [`ClusterIdentity`]
//! loads this cluster's key and certificate together with the certificates of every
//! member of the ClusterSet, checking each against the CA.
//!
//! **Leniency in the ClusterSet directory.** Only `*.crt` files other than `ca.crt` are
//! read there; other files (keys, READMEs, Kubernetes' `..data` links) are ignored. A
//! `*.crt` that cannot be read, is not a certificate, is not signed by the CA (or not
//! valid yet), has expired, or names no single cluster is skipped with a warning and
//! listed in [`ClusterIdentity::skipped`]: one stray file must not stop the node. Two
//! valid certificates naming one cluster with different keys are ambiguous trust and
//! stop it, as does any problem with this cluster's own certificate, key or CA.
//!
//! **Architecture invariant:** a private key never leaves this module's types in a
//! printable form: [`ClusterIdentity`]'s `Debug` shows the cluster and the trusted
//! clusters only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ed25519_dalek::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::collections::BTreeMap;

use shoal_proto::{ClusterId, ClusterKey, KeyRing};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::OID_SIG_ED25519;

/// Every cluster's certificate names `<cluster-id>.` followed by this suffix.
pub const CLUSTER_DNS_SUFFIX: &str = "cluster.shoal";
/// Name of the CA certificate in a CA or ClusterSet directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// Name of the CA private key in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Most certificates read from a ClusterSet directory.
pub const CLUSTERSET_CERTS_MAX: usize = 1_024;
/// Largest certificate or key file read, in bytes.
pub const PEM_FILE_BYTES_MAX: u64 = 64 * 1024;
/// How far back a new certificate's validity starts, to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3_600);
const SECONDS_PER_DAY: u64 = 86_400;

/// Why certificates could not be made or loaded. Files already written stay written;
/// nothing is loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read, written or listed. Nothing else was changed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `init_ca` found a CA already in place and left it untouched.
    #[error("{}: already exists; refusing to overwrite a CA", path.display())]
    Exists { path: PathBuf },
    /// A file is not the PEM certificate or PKCS#8 ed25519 key it should be.
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    /// rcgen could not generate a key or sign a certificate; nothing was written.
    #[error("generating {what}: {reason}")]
    Generate { what: &'static str, reason: String },
    /// The certificate is not signed by the ClusterSet CA, or not yet valid.
    #[error("{}: not trusted by the ClusterSet CA: {reason}", path.display())]
    NotTrusted { path: PathBuf, reason: String },
    /// The certificate has expired.
    #[error("{}: expired: {reason}", path.display())]
    Expired { path: PathBuf, reason: String },
    /// The certificate does not name exactly one cluster, or its key is not ed25519.
    #[error("{}: {reason}", path.display())]
    Identity { path: PathBuf, reason: String },
    /// The private key is not the one the certificate certifies.
    #[error("{}: the key does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// The ClusterSet directory holds more certificates than the ring may.
    #[error("{}: more than {max} certificates (or clusters)", path.display())]
    TooMany { path: PathBuf, max: usize },
    /// Two valid certificates name the same cluster with different keys: which one to
    /// trust is ambiguous, so neither is; nothing was loaded.
    #[error(
        "{} and {} both name cluster {cluster} with different keys; remove the stale one",
        first.display(),
        second.display()
    )]
    Ambiguous {
        cluster: ClusterId,
        first: PathBuf,
        second: PathBuf,
    },
}

impl CertError {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            CertError::Io { .. } => "io",
            CertError::Exists { .. } => "exists",
            CertError::Pem { .. } => "pem",
            CertError::Generate { .. } => "generate",
            CertError::NotTrusted { .. } => "not_trusted",
            CertError::Expired { .. } => "expired",
            CertError::Identity { .. } => "identity",
            CertError::KeyMismatch { .. } => "key_mismatch",
            CertError::TooMany { .. } => "too_many",
            CertError::Ambiguous { .. } => "ambiguous",
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

fn generate_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |e| CertError::Generate {
        what,
        reason: e.to_string(),
    }
}

/// The DNS name a cluster's certificate carries, and the TLS server name dialed for it.
pub fn server_name_of(cluster: &ClusterId) -> String {
    format!("{cluster}.{CLUSTER_DNS_SUFFIX}")
}

/// Creates a ClusterSet CA (ed25519) valid for `valid_days`: writes `dir/ca.crt` and
/// `dir/ca.key` (mode 0600). Refuses to overwrite an existing CA.
pub fn init_ca(dir: &Path, valid_days: u32) -> Result<(), CertError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(generate_error("CA key"))?;
    let (not_before, not_after) = validity_from_now(valid_days);
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // A distinct name per CA: a verifier then tells "another CA" (unknown issuer) from
    // "this CA, bad signature".
    let fingerprint: String = key.public_key_raw()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Shoal ClusterSet CA {fingerprint}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params
        .self_signed(&key)
        .map_err(generate_error("CA certificate"))?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Issues `out_dir/<cluster>.crt` and `out_dir/<cluster>.key` (PKCS#8 PEM, mode 0600),
/// signed by the CA in `ca_dir`, valid from now (minus an hour of skew) for `valid_days`.
pub fn issue(
    ca_dir: &Path,
    cluster: &ClusterId,
    out_dir: &Path,
    valid_days: u32,
) -> Result<(), CertError> {
    let (not_before, not_after) = validity_from_now(valid_days);
    issue_with(ca_dir, cluster, out_dir, not_before, not_after)
}

/// [`issue`] with an explicit validity window (tests use it to make expired certificates).
pub fn issue_with(
    ca_dir: &Path,
    cluster: &ClusterId,
    out_dir: &Path,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), CertError> {
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_cert_pem = read_text(&ca_cert_path)?;
    let ca_key_pem = read_text(&ca_key_path)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| CertError::Pem {
        path: ca_key_path.clone(),
        reason: e.to_string(),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).map_err(|e| CertError::Pem {
        path: ca_cert_path.clone(),
        reason: e.to_string(),
    })?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(generate_error("cluster key"))?;
    let mut params = CertificateParams::new(vec![server_name_of(cluster)])
        .map_err(generate_error("cluster certificate"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, cluster.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(generate_error("cluster certificate"))?;
    fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;
    write_replacing(
        &out_dir.join(format!("{cluster}.key")),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_replacing(
        &out_dir.join(format!("{cluster}.crt")),
        cert.pem().as_bytes(),
        0o644,
    )?;
    Ok(())
}

#[allow(clippy::disallowed_methods)] // issuing a certificate reads the wall clock
fn validity_from_now(valid_days: u32) -> (SystemTime, SystemTime) {
    let now = SystemTime::now();
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    let not_after = now + Duration::from_secs(u64::from(valid_days) * SECONDS_PER_DAY);
    (not_before, not_after)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))
}

fn write_replacing(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_error(path))?;
    // `mode` only applies to a new file; an older file may have looser permissions.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, CertError> {
    let len = fs::metadata(path).map_err(io_error(path))?.len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(CertError::Pem {
            path: path.to_owned(),
            reason: format!("{len} bytes exceed the {PEM_FILE_BYTES_MAX}-byte limit"),
        });
    }
    fs::read(path).map_err(io_error(path))
}

fn read_text(path: &Path) -> Result<String, CertError> {
    String::from_utf8(read_bytes(path)?).map_err(|_| CertError::Pem {
        path: path.to_owned(),
        reason: "not UTF-8 text".into(),
    })
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(&read_bytes(path)?).map_err(|e| CertError::Pem {
        path: path.to_owned(),
        reason: format!("no PEM certificate: {e}"),
    })
}

/// The cluster a certificate names (its single `<cluster>.cluster.shoal` DNS SAN, equal
/// to its common name) and its ed25519 public key. Does not check who signed it.
pub fn cluster_of(cert_der: &[u8]) -> Result<(ClusterId, [u8; 32]), CertError> {
    cluster_of_file(cert_der, Path::new("peer certificate"))
}

fn cluster_of_file(cert_der: &[u8], path: &Path) -> Result<(ClusterId, [u8; 32]), CertError> {
    let refuse = |reason: String| CertError::Identity {
        path: path.to_owned(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| refuse(format!("not an X.509 certificate: {e}")))?;
    let cluster = cluster_from_san(&cert).map_err(&refuse)?;
    let mut common_names = cert.subject().iter_common_name();
    let common_name = common_names.next().and_then(|cn| cn.as_str().ok());
    if common_name != Some(cluster.as_str()) || common_names.next().is_some() {
        return Err(refuse(format!(
            "common name {common_name:?} is not the cluster {cluster}"
        )));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(refuse("the key is not ed25519".into()));
    }
    let public: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| refuse("the ed25519 key is not 32 bytes".into()))?;
    Ok((cluster, public))
}

fn cluster_from_san(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<ClusterId, String> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .ok_or_else(|| "no subjectAltName".to_owned())?;
    let [GeneralName::DNSName(name)] = san.value.general_names.as_slice() else {
        return Err(format!(
            "{} subject alternative names, expected exactly one DNS name",
            san.value.general_names.len()
        ));
    };
    let suffix = format!(".{CLUSTER_DNS_SUFFIX}");
    let label = name
        .strip_suffix(suffix.as_str())
        .ok_or_else(|| format!("DNS name {name:?} does not end in {suffix}"))?;
    ClusterId::new(label).map_err(|e| format!("DNS name {name:?}: {e}"))
}

/// Checks that `cert` chains to `ca` and is valid now for client (and therefore peer)
/// authentication.
fn verify_signed_by_ca(
    cert: &CertificateDer<'static>,
    ca: &CertificateDer<'static>,
    path: &Path,
) -> Result<(), CertError> {
    let refuse = |reason: String| CertError::NotTrusted {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| refuse(format!("unusable CA: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| refuse(format!("unusable CA: {e}")))?;
    match verifier.verify_client_cert(cert, &[], UnixTime::now()) {
        Ok(_) => Ok(()),
        Err(
            e @ rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. },
            ),
        ) => Err(CertError::Expired {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// A `*.crt` of the ClusterSet directory left out of the trust ring.
#[derive(Debug)]
pub struct SkippedCert {
    pub path: PathBuf,
    /// Why; its `metric_label()` names the check that failed (`io`, `pem`,
    /// `not_trusted`, `expired`, `identity`), and its text names the file.
    pub error: CertError,
}

/// This cluster's identity: its id, its signing key, the keys of every ClusterSet
/// member, and the TLS material the transport builds its configs from.
pub struct ClusterIdentity {
    /// The cluster this node's certificate names.
    pub cluster: ClusterId,
    /// The record-signing key (the same ed25519 key as the TLS key).
    pub signing_key: ClusterKey,
    /// Every ClusterSet member's certified public key, this cluster's included.
    pub trust: KeyRing,
    /// ClusterSet members whose certificate has expired (and that have no valid one):
    /// left out of `trust` (their records are not accepted and their handshakes are
    /// refused) until renewed.
    pub expired_peers: Vec<ClusterId>,
    /// Every `*.crt` of the ClusterSet directory left out of `trust`, expired ones
    /// included, in file name order.
    pub skipped: Vec<SkippedCert>,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    ca: CertificateDer<'static>,
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIdentity")
            .field("cluster", &self.cluster)
            .field("trust", &self.trust.clusters().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ClusterIdentity {
    /// A secret for QUIC stateless resets, derived from the private key and the
    /// replica, so that it survives a restart: after one, packets still arriving on a
    /// connection of the previous process are answered with a reset the peer accepts,
    /// and it drops that connection at once (RFC 9000, section 10.3).
    pub fn stateless_reset_secret(&self, replica: u16) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(b"shoal/quic-stateless-reset/v1");
        context.update(self.key.secret_pkcs8_der());
        context.update(&replica.to_le_bytes());
        let mut secret = [0; 32];
        secret.copy_from_slice(context.finish().as_ref());
        secret
    }

    /// Loads and checks this cluster's identity: `cert` must be signed by the CA in
    /// `ca`, name exactly one cluster and match `key` (PKCS#8 ed25519). The trust ring
    /// holds every `*.crt` in `clusterset_dir` but `ca.crt`, each checked the same way,
    /// except that a certificate failing a check is left out with a warning (and listed
    /// in `skipped`, and an expired one in `expired_peers`) instead of stopping this
    /// node: one cluster's lapsed certificate, or one stray file, must not keep every
    /// other node from starting. Two certificates (`cert` included) naming one cluster
    /// with different keys are an error ([`CertError::Ambiguous`]).
    pub fn load(
        ca: &Path,
        cert: &Path,
        key: &Path,
        clusterset_dir: &Path,
    ) -> Result<ClusterIdentity, CertError> {
        let ca_der = read_cert(ca)?;
        let cert_der = read_cert(cert)?;
        verify_signed_by_ca(&cert_der, &ca_der, cert)?;
        let (cluster, public) = cluster_of_file(&cert_der, cert)?;
        let key_pem = read_text(key)?;
        let signing =
            ed25519_dalek::SigningKey::from_pkcs8_pem(&key_pem).map_err(|e| CertError::Pem {
                path: key.to_owned(),
                reason: format!("not a PKCS#8 ed25519 key: {e}"),
            })?;
        if signing.verifying_key().to_bytes() != public {
            return Err(CertError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }
        let key_der =
            PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertError::Pem {
                path: key.to_owned(),
                reason: format!("no PKCS#8 private key: {e}"),
            })?;
        let mut set = load_clusterset(&ca_der, clusterset_dir)?;
        set.trust(cluster.clone(), public, cert)?;
        let expired_peers = set.expired_peers();
        Ok(ClusterIdentity {
            signing_key: ClusterKey::from_seed(cluster.clone(), signing.to_bytes()),
            cluster,
            trust: set.ring,
            expired_peers,
            skipped: set.skipped,
            cert: cert_der,
            key: key_der,
            ca: ca_der,
        })
    }

    /// This cluster's certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The ClusterSet CA certificate (DER).
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The TLS private key. Only the transport's TLS configs take it.
    pub(crate) fn key_der(&self) -> PrivatePkcs8KeyDer<'static> {
        self.key.clone_key()
    }
}

/// The ClusterSet directory as read: the ring, the file each key came from, and what
/// was left out.
#[derive(Default)]
struct ClusterSet {
    ring: KeyRing,
    sources: BTreeMap<ClusterId, PathBuf>,
    expired: Vec<ClusterId>,
    skipped: Vec<SkippedCert>,
}

impl ClusterSet {
    /// Adds `cluster`'s key, read from `path`. The same key again changes nothing (a
    /// copy of a file); a different key for a cluster already trusted is
    /// [`CertError::Ambiguous`].
    fn trust(
        &mut self,
        cluster: ClusterId,
        public: [u8; 32],
        path: &Path,
    ) -> Result<(), CertError> {
        if let Some(first) = self.sources.get(&cluster) {
            if self.ring.public(&cluster) == Some(public) {
                return Ok(());
            }
            return Err(CertError::Ambiguous {
                cluster,
                first: first.clone(),
                second: path.to_owned(),
            });
        }
        self.ring
            .insert(cluster.clone(), public)
            .map_err(|e| CertError::Identity {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        self.sources.insert(cluster, path.to_owned());
        Ok(())
    }

    /// Leaves `path` out, with a warning. `cluster` is the one it names, if it names one.
    fn skip(&mut self, path: PathBuf, cluster: Option<ClusterId>, error: CertError) {
        match (&error, cluster) {
            (CertError::Expired { .. }, Some(cluster)) => {
                tracing::warn!(%cluster, file = %path.display(), error = %error, "peer certificate expired; not trusted until renewed");
                self.expired.push(cluster);
            }
            _ => {
                tracing::warn!(file = %path.display(), reason = error.metric_label(), error = %error, "clusterset certificate skipped");
            }
        }
        self.skipped.push(SkippedCert { path, error });
    }

    /// The clusters whose certificate expired and that no other file certifies.
    fn expired_peers(&self) -> Vec<ClusterId> {
        let mut expired: Vec<ClusterId> = self
            .expired
            .iter()
            .filter(|cluster| !self.ring.contains(cluster))
            .cloned()
            .collect();
        expired.sort();
        expired.dedup();
        expired
    }
}

/// Every `*.crt` of `dir` but `ca.crt`, sorted; at most [`CLUSTERSET_CERTS_MAX`].
fn clusterset_files(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let is_cert = path.extension().is_some_and(|ext| ext == "crt");
        let is_ca = path.file_name().is_some_and(|name| name == CA_CERT_FILE);
        if is_cert && !is_ca {
            if paths.len() == CLUSTERSET_CERTS_MAX {
                return Err(CertError::TooMany {
                    path: dir.to_owned(),
                    max: CLUSTERSET_CERTS_MAX,
                });
            }
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// The trust ring from `dir`: each certificate that is readable, names one cluster and
/// is valid under `ca`; the others skipped. Fails only if `dir` cannot be listed, holds
/// too many certificates, or certifies one cluster with two keys.
fn load_clusterset(ca: &CertificateDer<'static>, dir: &Path) -> Result<ClusterSet, CertError> {
    let mut set = ClusterSet::default();
    for path in clusterset_files(dir)? {
        let der = match read_cert(&path) {
            Ok(der) => der,
            Err(e) => {
                set.skip(path, None, e);
                continue;
            }
        };
        let (cluster, public) = match cluster_of_file(&der, &path) {
            Ok(named) => named,
            Err(e) => {
                set.skip(path, None, e);
                continue;
            }
        };
        if let Err(e) = verify_signed_by_ca(&der, ca, &path) {
            set.skip(path, Some(cluster), e);
            continue;
        }
        match set.trust(cluster, public, &path) {
            Ok(()) => {}
            Err(e @ CertError::Ambiguous { .. }) => return Err(e),
            Err(e) => set.skip(path, None, e),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str) -> ClusterId {
        ClusterId::new(name).unwrap()
    }

    #[test]
    fn issued_certificate_loads_and_names_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let set = dir.path().join("set");
        init_ca(&ca, 30).unwrap();
        issue(&ca, &cluster("east"), &set, 30).unwrap();
        issue(&ca, &cluster("west"), &set, 30).unwrap();
        fs::copy(ca.join(CA_CERT_FILE), set.join(CA_CERT_FILE)).unwrap();
        let mode = fs::metadata(set.join("east.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(ca.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let identity = ClusterIdentity::load(
            &ca.join(CA_CERT_FILE),
            &set.join("east.crt"),
            &set.join("east.key"),
            &set,
        )
        .unwrap();
        assert_eq!(identity.cluster, cluster("east"));
        assert_eq!(identity.trust.len(), 2);
        assert_eq!(
            identity.trust.public(&cluster("east")),
            Some(identity.signing_key.public())
        );
        let (named, public) = cluster_of(identity.cert_der()).unwrap();
        assert_eq!(named, cluster("east"));
        assert_eq!(public, identity.signing_key.public());
        let shown = format!("{identity:?}");
        assert!(shown.contains("east") && !shown.contains("PRIVATE"));
    }

    #[test]
    fn init_ca_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), 1).unwrap();
        let before = fs::read(dir.path().join(CA_KEY_FILE)).unwrap();
        assert!(matches!(
            init_ca(dir.path(), 1),
            Err(CertError::Exists { .. })
        ));
        assert_eq!(fs::read(dir.path().join(CA_KEY_FILE)).unwrap(), before);
    }

    #[test]
    fn load_refuses_foreign_expired_and_mismatched_material() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, other_ca, set) = (
            dir.path().join("ca"),
            dir.path().join("o"),
            dir.path().join("s"),
        );
        init_ca(&ca, 30).unwrap();
        init_ca(&other_ca, 30).unwrap();
        issue(&ca, &cluster("east"), &set, 30).unwrap();
        issue(&ca, &cluster("west"), &set, 30).unwrap();
        let ca_crt = ca.join(CA_CERT_FILE);
        let load = |cert: &str, key: &str, set_dir: &Path| {
            ClusterIdentity::load(&ca_crt, &set.join(cert), &set.join(key), set_dir)
        };
        let err = load("east.crt", "west.key", &set).unwrap_err();
        assert_eq!(err.metric_label(), "key_mismatch");

        let foreign = dir.path().join("foreign");
        issue(&other_ca, &cluster("mallory"), &foreign, 30).unwrap();
        let err = ClusterIdentity::load(
            &ca_crt,
            &foreign.join("mallory.crt"),
            &foreign.join("mallory.key"),
            &set,
        )
        .unwrap_err();
        assert_eq!(err.metric_label(), "not_trusted");

        // A foreign certificate in the ClusterSet directory is skipped, named, and the
        // node still loads.
        fs::copy(foreign.join("mallory.crt"), set.join("mallory.crt")).unwrap();
        let identity = load("east.crt", "east.key", &set).unwrap();
        assert!(!identity.trust.contains(&cluster("mallory")));
        assert_eq!(identity.skipped.len(), 1, "{:?}", identity.skipped);
        assert_eq!(identity.skipped[0].path, set.join("mallory.crt"));
        assert_eq!(identity.skipped[0].error.metric_label(), "not_trusted");
        assert!(
            identity.skipped[0]
                .error
                .to_string()
                .contains("mallory.crt"),
            "{:?}",
            identity.skipped
        );
        fs::remove_file(set.join("mallory.crt")).unwrap();

        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let expired = dir.path().join("expired");
        issue_with(
            &ca,
            &cluster("east"),
            &expired,
            old,
            old + Duration::from_secs(60),
        )
        .unwrap();
        let err = ClusterIdentity::load(
            &ca_crt,
            &expired.join("east.crt"),
            &expired.join("east.key"),
            &set,
        )
        .unwrap_err();
        assert_eq!(err.metric_label(), "expired");

        // A peer's expired certificate in the ClusterSet directory leaves that peer
        // out of the ring, and this node still starts.
        issue_with(
            &ca,
            &cluster("north"),
            &set,
            old,
            old + Duration::from_secs(60),
        )
        .unwrap();
        let identity = load("east.crt", "east.key", &set).unwrap();
        assert_eq!(identity.expired_peers, vec![cluster("north")]);
        assert!(identity.trust.contains(&cluster("west")));
        assert!(!identity.trust.contains(&cluster("north")));
        let skipped: Vec<_> = identity
            .skipped
            .iter()
            .map(|s| (s.path.clone(), s.error.metric_label()))
            .collect();
        assert_eq!(skipped, vec![(set.join("north.crt"), "expired")]);
    }

    /// A CA in `dir/ca`, `east` and `west` issued into `dir/set`, with the CA's
    /// certificate copied there too.
    fn clusterset() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (ca, set) = (dir.path().join("ca"), dir.path().join("set"));
        init_ca(&ca, 30).unwrap();
        issue(&ca, &cluster("east"), &set, 30).unwrap();
        issue(&ca, &cluster("west"), &set, 30).unwrap();
        fs::copy(ca.join(CA_CERT_FILE), set.join(CA_CERT_FILE)).unwrap();
        (dir, ca, set)
    }

    fn load_east(ca: &Path, set: &Path) -> Result<ClusterIdentity, CertError> {
        ClusterIdentity::load(
            &ca.join(CA_CERT_FILE),
            &set.join("east.crt"),
            &set.join("east.key"),
            set,
        )
    }

    /// Writes `path`: a certificate with `names` as DNS SANs (the first also the common
    /// name), an ed25519 key, signed by the CA in `ca`, valid from `not_before` on.
    fn write_custom(ca: &Path, path: &Path, names: &[&str], not_before: SystemTime) {
        let ca_key = KeyPair::from_pem(&fs::read_to_string(ca.join(CA_KEY_FILE)).unwrap()).unwrap();
        let ca_pem = fs::read_to_string(ca.join(CA_CERT_FILE)).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(first) = names.first() {
            let cn = first.strip_suffix(".cluster.shoal").unwrap_or(first);
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = (not_before + Duration::from_secs(30 * SECONDS_PER_DAY)).into();
        let cert = params.signed_by(&key, &issuer).unwrap();
        fs::write(path, cert.pem()).unwrap();
    }

    fn skipped_labels(identity: &ClusterIdentity) -> Vec<(String, &'static str)> {
        identity
            .skipped
            .iter()
            .map(|s| {
                let name = s.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, s.error.metric_label())
            })
            .collect()
    }

    #[test]
    fn every_kind_of_stray_certificate_in_the_clusterset_dir_is_skipped_and_listed() {
        let (dir, ca, set) = clusterset();
        let (now, _) = validity_from_now(1);
        // Not PEM at all, and PEM of something else.
        fs::write(set.join("junk.crt"), b"not a certificate\n").unwrap();
        fs::copy(set.join("west.key"), set.join("key-as-cert.crt")).unwrap();
        // Unreadable: a directory with a certificate's name.
        fs::create_dir(set.join("dir.crt")).unwrap();
        // Too large to be read.
        fs::write(
            set.join("huge.crt"),
            vec![b'A'; PEM_FILE_BYTES_MAX as usize + 1],
        )
        .unwrap();
        // Signed by another CA.
        let other = dir.path().join("other");
        init_ca(&other, 30).unwrap();
        issue(&other, &cluster("mallory"), &dir.path().join("o"), 30).unwrap();
        fs::copy(dir.path().join("o/mallory.crt"), set.join("mallory.crt")).unwrap();
        // The CA's, but naming no cluster, two clusters, or not valid yet.
        write_custom(&ca, &set.join("nosan.crt"), &[], now);
        write_custom(
            &ca,
            &set.join("two.crt"),
            &["north.cluster.shoal", "south.cluster.shoal"],
            now,
        );
        write_custom(&ca, &set.join("elsewhere.crt"), &["north.example.com"], now);
        let later = now + Duration::from_secs(10 * SECONDS_PER_DAY);
        write_custom(
            &ca,
            &set.join("future.crt"),
            &["north.cluster.shoal"],
            later,
        );
        // Expired.
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let expired = dir.path().join("expired");
        issue_with(
            &ca,
            &cluster("south"),
            &expired,
            old,
            old + Duration::from_secs(60),
        )
        .unwrap();
        fs::copy(expired.join("south.crt"), set.join("south.crt")).unwrap();
        // Not a certificate's name: ignored, not listed.
        fs::write(set.join("README"), b"member certificates").unwrap();

        let identity = load_east(&ca, &set).unwrap();
        assert_eq!(
            identity.trust.clusters().cloned().collect::<Vec<_>>(),
            vec![cluster("east"), cluster("west")]
        );
        assert_eq!(identity.expired_peers, vec![cluster("south")]);
        let expected = [
            ("dir.crt", "io"),
            ("elsewhere.crt", "identity"),
            ("future.crt", "not_trusted"),
            ("huge.crt", "pem"),
            ("junk.crt", "pem"),
            ("key-as-cert.crt", "pem"),
            ("mallory.crt", "not_trusted"),
            ("nosan.crt", "identity"),
            ("south.crt", "expired"),
            ("two.crt", "identity"),
        ];
        let expected: Vec<(String, &str)> = expected
            .iter()
            .map(|(name, label)| ((*name).to_owned(), *label))
            .collect();
        assert_eq!(skipped_labels(&identity), expected);
        for skipped in &identity.skipped {
            let file = skipped.path.file_name().unwrap().to_string_lossy();
            assert!(
                skipped.error.to_string().contains(file.as_ref()),
                "{skipped:?}"
            );
        }
    }

    #[test]
    fn two_certificates_naming_one_cluster_with_different_keys_stop_the_node() {
        let (dir, ca, set) = clusterset();
        // A copy of a member's certificate (same key) is no conflict.
        fs::copy(set.join("west.crt"), set.join("west-copy.crt")).unwrap();
        let identity = load_east(&ca, &set).unwrap();
        assert_eq!(identity.trust.len(), 2);
        assert!(identity.skipped.is_empty(), "{:?}", identity.skipped);

        // A second, valid certificate for west with another key is ambiguous.
        let again = dir.path().join("again");
        issue(&ca, &cluster("west"), &again, 30).unwrap();
        fs::copy(again.join("west.crt"), set.join("west-new.crt")).unwrap();
        let err = load_east(&ca, &set).unwrap_err();
        assert_eq!(err.metric_label(), "ambiguous");
        let text = err.to_string();
        assert!(
            text.contains("west-copy.crt")
                && text.contains("west-new.crt")
                && text.contains("west"),
            "{text}"
        );
        fs::remove_file(set.join("west-new.crt")).unwrap();

        // So is a certificate in the set for this very cluster with another key than
        // tls.cert's.
        issue(&ca, &cluster("east"), &again, 30).unwrap();
        fs::copy(again.join("east.crt"), set.join("east-other.crt")).unwrap();
        let err = load_east(&ca, &set).unwrap_err();
        assert_eq!(err.metric_label(), "ambiguous");
        assert!(err.to_string().contains("east-other.crt"), "{err}");
    }

    #[test]
    fn an_expired_copy_beside_a_renewed_certificate_is_skipped_without_marking_the_peer_expired() {
        let (dir, ca, set) = clusterset();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let expired = dir.path().join("expired");
        issue_with(
            &ca,
            &cluster("west"),
            &expired,
            old,
            old + Duration::from_secs(60),
        )
        .unwrap();
        fs::copy(expired.join("west.crt"), set.join("west-2001.crt")).unwrap();
        let identity = load_east(&ca, &set).unwrap();
        assert!(identity.trust.contains(&cluster("west")));
        assert!(identity.expired_peers.is_empty());
        assert_eq!(
            skipped_labels(&identity),
            vec![("west-2001.crt".to_owned(), "expired")]
        );
    }
}
