//! The keys and certificates of one test cluster: a CA that signs the API server's
//! serving certificate and every client certificate, and a service-account key.
//!
//! Everything is ECDSA P-256, which Go's TLS and Kubernetes' key loaders all accept.
//! Private keys are PKCS#8 PEM; the service-account key is also written as an SPKI
//! public key, because `--service-account-key-file` does not read PKCS#8 EC keys.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use super::StartError;

/// How long the certificates are valid.
const VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// How far back validity starts, to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3_600);

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub(crate) struct CertifiedKey {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

/// One cluster's CA.
pub(crate) struct ClusterCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new self-signed CA named `common_name`.
    pub(crate) fn new(common_name: &str) -> Result<Self, StartError> {
        let key = new_key("CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params);
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(pki_error("CA certificate"))?;
        Ok(ClusterCa { issuer })
    }

    /// The CA certificate, PEM.
    pub(crate) fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A serving certificate for `sans` (IP addresses or DNS names).
    pub(crate) fn issue_server(
        &self,
        common_name: &str,
        sans: &[&str],
    ) -> Result<CertifiedKey, StartError> {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params =
            CertificateParams::new(sans).map_err(pki_error("serving certificate names"))?;
        params.distinguished_name = name(common_name, None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, "serving certificate")
    }

    /// A client certificate for user `common_name`, in `group` if given (Kubernetes
    /// reads the user from CN and the groups from O; rcgen writes one O at most).
    pub(crate) fn issue_client(
        &self,
        common_name: &str,
        group: Option<&str>,
    ) -> Result<CertifiedKey, StartError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, group);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, "client certificate")
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        what: &'static str,
    ) -> Result<CertifiedKey, StartError> {
        let key = new_key(what)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(pki_error(what))?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A service-account signing key: (private PKCS#8 PEM, public SPKI PEM).
pub(crate) fn service_account_key() -> Result<(String, String), StartError> {
    let key = new_key("service-account key")?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

fn new_key(what: &'static str) -> Result<KeyPair, StartError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(pki_error(what))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name.push(DnType::CommonName, common_name);
    name
}

#[allow(clippy::disallowed_methods)] // a certificate's validity is wall-clock time
fn set_validity(params: &mut CertificateParams) {
    let now = SystemTime::now();
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = (now + VALIDITY).into();
}

fn pki_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> StartError {
    move |e| StartError::Pki {
        what,
        reason: e.to_string(),
    }
}
