//! Identifiers: clusters, replicas, members and services.

use std::fmt;
use std::sync::Arc;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Longest DNS label Kubernetes accepts (RFC 1123).
pub const DNS_LABEL_BYTES_MAX: usize = 63;

/// Why an identifier was refused. State unchanged: nothing was constructed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is empty or longer than a DNS label.
    #[error("{what} must be 1 to {DNS_LABEL_BYTES_MAX} bytes long, got {len}")]
    Length { what: &'static str, len: usize },
    /// The text is not a lowercase RFC 1123 label.
    #[error(
        "{what} {value:?} must be lowercase letters, digits and '-', not starting or ending with '-'"
    )]
    Charset { what: &'static str, value: String },
}

fn check_dns_label(what: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() || value.len() > DNS_LABEL_BYTES_MAX {
        return Err(IdError::Length {
            what,
            len: value.len(),
        });
    }
    let valid_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_chars || value.starts_with('-') || value.ends_with('-') {
        return Err(IdError::Charset {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! label_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Shared text: a clone is a reference count, not an allocation (membership and
        /// the view clone identifiers on every step). Encodes exactly as a string.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `value` as a lowercase DNS label.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_dns_label($what, &value)?;
                Ok(Self(Arc::from(value)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name where String: Deserialize<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = String::deserialize(d)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }

        impl Encode for $name {
            fn encode<E: bincode::enc::Encoder>(
                &self,
                encoder: &mut E,
            ) -> Result<(), bincode::error::EncodeError> {
                Encode::encode(&*self.0, encoder)
            }
        }

        impl<Context> Decode<Context> for $name {
            fn decode<D: bincode::de::Decoder<Context = Context>>(
                decoder: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                let value = String::decode(decoder)?;
                Self::new(value).map_err(|e| bincode::error::DecodeError::OtherString(e.to_string()))
            }
        }

        impl<'de, Context> bincode::BorrowDecode<'de, Context> for $name {
            fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = Context>>(
                decoder: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                <Self as Decode<Context>>::decode(decoder)
            }
        }
    };
}

label_type!(
    /// A member cluster of the ClusterSet, as named in its certificate.
    ClusterId,
    "cluster id"
);
label_type!(
    /// A Kubernetes namespace name.
    Namespace,
    "namespace"
);
label_type!(
    /// A Kubernetes Service name.
    ServiceName,
    "service name"
);
label_type!(
    /// The name of a quorum lease, for example `payments-write-leader`.
    LeaseName,
    "lease name"
);

/// One replica of a cluster's Shoal StatefulSet (its pod ordinal).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub struct ReplicaId(pub u16);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A membership id: one replica of one cluster.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub struct MemberId {
    pub cluster: ClusterId,
    pub replica: ReplicaId,
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.replica)
    }
}

/// A transport address carried in membership, opaque to the protocol core.
/// IPv4 addresses are stored as IPv4-mapped IPv6.
///
/// On the wire (bincode, both `Encode` and serde) it is one byte string: the IPv4
/// address (4 bytes) or the IPv6 address (16), then the port (2, big endian), after a
/// one-byte length: 7 bytes for IPv4. Every SWIM packet names two members, so this
/// matters. Human-readable formats get `ip:port` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetAddr {
    pub ip: [u8; 16],
    pub port: u16,
}

/// The longest compact form: an IPv6 address and the port.
const NET_ADDR_BYTES_MAX: usize = 18;

impl NetAddr {
    /// The compact wire form; its length is 6 or 18.
    fn to_compact(self) -> ([u8; NET_ADDR_BYTES_MAX], usize) {
        let mut out = [0u8; NET_ADDR_BYTES_MAX];
        let v6 = std::net::Ipv6Addr::from(self.ip);
        let ip_len = match v6.to_ipv4_mapped() {
            Some(v4) => {
                out[..4].copy_from_slice(&v4.octets());
                4
            }
            None => {
                out[..16].copy_from_slice(&self.ip);
                16
            }
        };
        out[ip_len..ip_len + 2].copy_from_slice(&self.port.to_be_bytes());
        (out, ip_len + 2)
    }

    fn from_compact(bytes: &[u8]) -> Option<Self> {
        let (ip, port) = bytes.split_last_chunk::<2>()?;
        let ip = match ip.len() {
            4 => std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])
                .to_ipv6_mapped()
                .octets(),
            16 => ip.try_into().ok()?,
            _ => return None,
        };
        Some(NetAddr {
            ip,
            port: u16::from_be_bytes(*port),
        })
    }
}

impl Serialize for NetAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.collect_str(self);
        }
        let (bytes, len) = self.to_compact();
        s.serialize_bytes(&bytes[..len])
    }
}

impl<'de> Deserialize<'de> for NetAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NetAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address: 6 or 18 bytes, or ip:port text")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<NetAddr, E> {
                NetAddr::from_compact(v).ok_or_else(|| E::invalid_length(v.len(), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NetAddr, E> {
                v.parse::<std::net::SocketAddr>()
                    .map(NetAddr::from)
                    .map_err(E::custom)
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(Visitor)
        } else {
            d.deserialize_bytes(Visitor)
        }
    }
}

impl Encode for NetAddr {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        let (bytes, len) = self.to_compact();
        Encode::encode(&bytes[..len], encoder)
    }
}

impl<Context> Decode<Context> for NetAddr {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let len = usize::try_from(u64::decode(decoder)?)
            .map_err(|_| bincode::error::DecodeError::Other("address length overflows"))?;
        if len > NET_ADDR_BYTES_MAX {
            return Err(bincode::error::DecodeError::Other(
                "address longer than 18 bytes",
            ));
        }
        decoder.claim_bytes_read(len)?;
        let mut bytes = [0u8; NET_ADDR_BYTES_MAX];
        bincode::de::read::Reader::read(decoder.reader(), &mut bytes[..len])?;
        NetAddr::from_compact(&bytes[..len]).ok_or(bincode::error::DecodeError::Other(
            "an address is 6 or 18 bytes",
        ))
    }
}

impl<'de, Context> bincode::BorrowDecode<'de, Context> for NetAddr {
    fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        Decode::decode(decoder)
    }
}

impl From<std::net::SocketAddr> for NetAddr {
    fn from(addr: std::net::SocketAddr) -> Self {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        Self {
            ip: ip.octets(),
            port: addr.port(),
        }
    }
}

impl From<NetAddr> for std::net::SocketAddr {
    fn from(addr: NetAddr) -> Self {
        let v6 = std::net::Ipv6Addr::from(addr.ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        };
        std::net::SocketAddr::new(ip, addr.port)
    }
}

impl fmt::Display for NetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        std::net::SocketAddr::from(*self).fmt(f)
    }
}

/// A service as the MCS API names it: namespace sameness means the same
/// namespace/name is the same service in every cluster.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub struct ServiceKey {
    pub namespace: Namespace,
    pub name: ServiceName,
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> Result<Self, IdError> {
        Ok(Self {
            namespace: Namespace::new(namespace)?,
            name: ServiceName::new(name)?,
        })
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_dns_labels() {
        assert!(ClusterId::new("us-east-1").is_ok());
        assert!(matches!(ClusterId::new(""), Err(IdError::Length { .. })));
        assert!(matches!(
            ClusterId::new("a".repeat(64)),
            Err(IdError::Length { .. })
        ));
        assert!(matches!(ClusterId::new("US"), Err(IdError::Charset { .. })));
        assert!(matches!(ClusterId::new("-a"), Err(IdError::Charset { .. })));
        assert!(matches!(
            ClusterId::new("a/b"),
            Err(IdError::Charset { .. })
        ));
    }

    #[test]
    fn net_addr_round_trips_v4_and_v6() {
        for (text, wire_len) in [("127.0.0.1:7946", 7), ("[::1]:443", 19)] {
            let addr: std::net::SocketAddr = text.parse().unwrap();
            let net = NetAddr::from(addr);
            assert_eq!(std::net::SocketAddr::from(net), addr);
            let encoded = bincode::encode_to_vec(net, bincode::config::standard()).unwrap();
            assert_eq!(encoded.len(), wire_len, "{text}");
            let serde = bincode::serde::encode_to_vec(net, bincode::config::standard()).unwrap();
            assert_eq!(serde, encoded, "serde and Encode agree");
            let (back, _): (NetAddr, _) =
                bincode::decode_from_slice(&encoded, bincode::config::standard()).unwrap();
            assert_eq!(back, net);
            let (back, _): (NetAddr, _) =
                bincode::serde::decode_from_slice(&encoded, bincode::config::standard()).unwrap();
            assert_eq!(back, net);
        }
    }

    #[test]
    fn net_addr_refuses_other_lengths() {
        for bad in [&[0u8][..], &[3, 1, 2, 3], &[20; 21]] {
            let decoded =
                bincode::decode_from_slice::<NetAddr, _>(bad, bincode::config::standard());
            assert!(decoded.is_err(), "{bad:?}");
            let decoded =
                bincode::serde::decode_from_slice::<NetAddr, _>(bad, bincode::config::standard());
            assert!(decoded.is_err(), "{bad:?}");
        }
    }
}
