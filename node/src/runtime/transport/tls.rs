//! rustls and quinn configuration: mutual TLS 1.3 against the ClusterSet CA, ALPN
//! `shoal/3`, no early data, and the QUIC limits; and reading the cluster a peer's
//! certificate names.
//!
//! **Membership at the handshake.** A certificate signed by the ClusterSet CA is not
//! enough: both sides also require that the peer's leaf names exactly one cluster of
//! this node's trust ring (the certificates in `tls.clusterset_dir`), with the very
//! ed25519 key the ring holds for it. Anything else is refused with the TLS alert
//! `access_denied`, counted as `not_member`: a non-member never completes a handshake,
//! so it never takes part in SWIM or gossip.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, IdleTimeout, VarInt};
use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DistinguishedName, RootCertStore, SignatureScheme};
use shoal_proto::{ClusterId, KeyRing};
use tracing::debug;

use super::{TransportError, TransportLimits};
use crate::runtime::certs::{ClusterIdentity, cluster_of};

/// The one application protocol spoken. Version 2: SWIM identities carry their
/// renewals since the process started; a `shoal/1` node is refused at the handshake
/// rather than misread.
pub const ALPN: &[u8] = b"shoal/3";
/// QUIC's first packet size. Loopback and most networks carry 1,400 bytes, enough for a
/// 1,200-byte core datagram with its header; MTU discovery may raise it.
pub const INITIAL_MTU: u16 = 1_400;
/// QUIC datagram receive and send buffers, per connection.
pub const DATAGRAM_BUFFER_BYTES: usize = 256 * 1024;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(identity: &ClusterIdentity) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(identity.ca_der().clone())
        .map_err(|e| TransportError::Tls(format!("CA certificate: {e}")))?;
    Ok(Arc::new(roots))
}

fn own_chain(identity: &ClusterIdentity) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        vec![identity.cert_der().clone()],
        PrivateKeyDer::Pkcs8(identity.key_der()),
    )
}

/// The server side: client certificates mandatory, verified against the CA and the
/// trust ring.
pub(crate) fn server_config(
    identity: &ClusterIdentity,
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, TransportError> {
    let tls = |e: rustls::Error| TransportError::Tls(e.to_string());
    let chain_verifier = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider())
        .build()
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let verifier = Arc::new(MemberClientVerifier {
        chain: chain_verifier,
        members: Members::of(identity),
    });
    let (chain, key) = own_chain(identity);
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls)?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    crypto.max_early_data_size = 0;
    let crypto =
        QuicServerConfig::try_from(crypto).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config(limits)?);
    config.max_incoming(limits.connections_max);
    config.migration(false);
    Ok(config)
}

/// The client side: presents this cluster's certificate and checks the server's against
/// the CA, the server name of the cluster dialed, and the trust ring.
pub(crate) fn client_config(
    identity: &ClusterIdentity,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, TransportError> {
    let tls = |e: rustls::Error| TransportError::Tls(e.to_string());
    let chain_verifier = WebPkiServerVerifier::builder_with_provider(roots(identity)?, provider())
        .build()
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let verifier = Arc::new(MemberServerVerifier {
        chain: chain_verifier,
        members: Members::of(identity),
    });
    let (chain, key) = own_chain(identity);
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(tls)?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    crypto.enable_early_data = false;
    let crypto =
        QuicClientConfig::try_from(crypto).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config(limits)?);
    Ok(config)
}

/// The ClusterSet's members as the handshake checks them: a peer's leaf must name one
/// cluster of the ring, with the key the ring pins for it.
#[derive(Debug)]
struct Members {
    trust: KeyRing,
}

impl Members {
    fn of(identity: &ClusterIdentity) -> Self {
        Self {
            trust: identity.trust.clone(),
        }
    }

    /// Refuses a leaf whose cluster is not in the ring, or whose key is not the one the
    /// ring holds for it (a second CA-signed certificate for a member is not that
    /// member). The chain was verified before; this only reads the leaf.
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let refused =
            || rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        let (cluster, public) = cluster_of(leaf).map_err(|e| {
            debug!(error = %e, "peer certificate refused: it names no single cluster");
            refused()
        })?;
        match self.trust.public(&cluster) {
            Some(pinned) if pinned == public => Ok(()),
            Some(_) => {
                debug!(%cluster, "peer certificate refused: not the key certified for its cluster in the ClusterSet");
                Err(refused())
            }
            None => {
                debug!(%cluster, "peer certificate refused: cluster is not a ClusterSet member");
                Err(refused())
            }
        }
    }
}

/// The server's check of a client: the CA's chain (WebPki), then [`Members::check`].
#[derive(Debug)]
struct MemberClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    members: Members,
}

impl ClientCertVerifier for MemberClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.chain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        self.members.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The client's check of a server: the CA's chain and the dialed cluster's name
/// (WebPki), then [`Members::check`].
#[derive(Debug)]
struct MemberServerVerifier {
    chain: Arc<dyn ServerCertVerifier>,
    members: Members,
}

impl ServerCertVerifier for MemberServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.members.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.chain.root_hint_subjects()
    }
}

fn transport_config(
    limits: &TransportLimits,
) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let idle = IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
        .map_err(|_| TransportError::Limits("idle_timeout_ms is too large".into()))?;
    let mut config = quinn::TransportConfig::default();
    config
        .max_concurrent_uni_streams(VarInt::from_u32(limits.uni_streams_per_connection_max))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(limits.stream_receive_window_bytes))
        .receive_window(VarInt::from_u32(limits.connection_receive_window_bytes))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(
            (limits.keepalive_ms != 0).then(|| Duration::from_millis(limits.keepalive_ms)),
        )
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER_BYTES))
        .datagram_send_buffer_size(DATAGRAM_BUFFER_BYTES)
        .initial_mtu(INITIAL_MTU)
        // Probing for a larger MTU costs a few full-size packets per connection and buys
        // nothing here: SWIM fits the initial MTU, and frames are segmented anyway.
        .mtu_discovery_config(None);
    Ok(Arc::new(config))
}

/// The cluster the peer's verified certificate names. The handshake already checked the
/// chain and the ClusterSet membership; this reads the name.
pub(crate) fn peer_cluster(conn: &quinn::Connection) -> Option<ClusterId> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = chain.first()?;
    cluster_of(leaf).ok().map(|(cluster, _)| cluster)
}

/// When the peer's verified certificate expires.
pub(crate) fn peer_not_after(conn: &quinn::Connection) -> Option<std::time::SystemTime> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    let seconds = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// TLS alerts (RFC 8446) a refused handshake is classified by.
const ALERT_BAD_CERTIFICATE: u64 = 42;
const ALERT_CERTIFICATE_EXPIRED: u64 = 45;
const ALERT_UNKNOWN_CA: u64 = 48;
/// Sent for `CertificateError::ApplicationVerificationFailure`: the peer's certificate
/// is the CA's but names no member of this node's ClusterSet (or not its pinned key).
const ALERT_ACCESS_DENIED: u64 = 49;
const ALERT_DECRYPT_ERROR: u64 = 51;
const ALERT_CERTIFICATE_REQUIRED: u64 = 116;
const ALERT_NO_APPLICATION_PROTOCOL: u64 = 120;
/// QUIC carries a TLS alert as transport error `0x100 + alert` (RFC 9001 §4.8).
const CRYPTO_ERROR_BASE: u64 = 0x100;

/// The reject reason for a handshake that failed. `dialing`: this node was the client,
/// so a bad server certificate means the address served another cluster.
pub(crate) fn handshake_reason(err: &ConnectionError, dialing: bool) -> &'static str {
    match err {
        ConnectionError::TransportError(e) => {
            let code = u64::from(e.code);
            if !(CRYPTO_ERROR_BASE..CRYPTO_ERROR_BASE + 0x100).contains(&code) {
                return "handshake_failed";
            }
            match code - CRYPTO_ERROR_BASE {
                ALERT_CERTIFICATE_REQUIRED => "no_certificate",
                ALERT_UNKNOWN_CA => "unknown_ca",
                ALERT_ACCESS_DENIED => "not_member",
                ALERT_CERTIFICATE_EXPIRED => "cert_expired",
                ALERT_BAD_CERTIFICATE if dialing => "wrong_cluster",
                ALERT_BAD_CERTIFICATE => "bad_certificate",
                ALERT_DECRYPT_ERROR => "bad_signature",
                ALERT_NO_APPLICATION_PROTOCOL => "no_alpn",
                _ => "tls_refused",
            }
        }
        ConnectionError::ConnectionClosed(_) | ConnectionError::ApplicationClosed(_) => {
            "refused_by_peer"
        }
        ConnectionError::TimedOut => "handshake_timeout",
        _ => "handshake_failed",
    }
}
