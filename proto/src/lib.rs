//! Shoal's wire vocabulary: who speaks (`ids`), what they say about their services
//! (`record`), the messages that carry it (`wire`), how bytes are made canonical and
//! bounded (`codec`), and how a record proves its origin (`sign`).
//!
//! Nothing here does IO. Every decoder takes attacker-controlled bytes and therefore
//! has an explicit size limit: a forged length prefix yields a [`DecodeError`], never
//! a large allocation.
//!
//! **Architecture invariant:** a [`Verified`] value can only be produced by
//! [`sign::verify`] (or by signing), so code holding one knows its signature checked out.

pub mod codec;
pub mod ids;
pub mod lease;
pub mod record;
pub mod sign;
pub mod wire;

pub use codec::{DecodeError, EncodeError};
pub use ids::{
    ClusterId, IdError, LeaseName, MemberId, Namespace, NetAddr, ReplicaId, ServiceKey, ServiceName,
};
pub use lease::{FencingToken, Grant, LeaseMessage};
pub use record::{
    Affinity, Endpoint, EndpointConditions, ExportRecord, InternalTrafficPolicy, IpAddress,
    IpFamily, NetworkMode, PortProtocol, RecordError, ServicePort, ServiceProperties, ServiceType,
    SessionAffinity,
};
pub use sign::{
    ClusterKey, KeyRing, KeyRingError, SignedRecord, Verified, VerifiedWeak, VerifyError,
};
pub use wire::{Channel, Message, OriginSummary, OriginWant, RecordRef, SwimIdentity};
