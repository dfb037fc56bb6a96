//! Property tests: arbitrary valid records round trip, sign and verify; corrupted or
//! random bytes never panic a decoder and never yield a different record that verifies.

mod common;

use proptest::prelude::*;
use proptest::sample::Index;
use shoal_proto::codec::{
    FRAME_BYTES_MAX, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET, decode_limited, encode_limited,
};
use shoal_proto::{
    ClusterId, ClusterKey, Endpoint, EndpointConditions, ExportRecord, InternalTrafficPolicy,
    IpAddress, IpFamily, KeyRing, Message, Namespace, NetworkMode, PortProtocol, ServiceKey,
    ServiceName, ServicePort, ServiceProperties, ServiceType, SessionAffinity, SignedRecord,
    VerifyError, sign,
};

// ---------------------------------------------------------------------------------------
// Strategies

/// A lowercase RFC 1123 label, 1 to 63 bytes.
const DNS_LABEL: &str = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";

fn cluster_id() -> impl Strategy<Value = ClusterId> {
    DNS_LABEL.prop_map(|s| ClusterId::new(s).expect("the regex yields DNS labels"))
}

fn service_key() -> impl Strategy<Value = ServiceKey> {
    (DNS_LABEL, DNS_LABEL).prop_map(|(namespace, name)| ServiceKey {
        namespace: Namespace::new(namespace).expect("the regex yields DNS labels"),
        name: ServiceName::new(name).expect("the regex yields DNS labels"),
    })
}

/// Free text within LABEL_BYTES_MAX (63 bytes): at most 15 characters of up to 4 bytes each.
fn label() -> impl Strategy<Value = String> {
    "\\PC{0,15}"
}

fn ip_address() -> impl Strategy<Value = IpAddress> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddress::V4),
        any::<[u8; 16]>().prop_map(IpAddress::V6),
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        prop::collection::vec(ip_address(), 1..=2),
        any::<(bool, bool, bool)>(),
        prop::option::of(label()),
        prop::option::of(label()),
    )
        .prop_map(
            |(addresses, (ready, serving, terminating), zone, hostname)| Endpoint {
                addresses,
                conditions: EndpointConditions {
                    ready,
                    serving,
                    terminating,
                },
                zone,
                hostname,
            },
        )
}

fn service_port() -> impl Strategy<Value = ServicePort> {
    (
        label(),
        prop_oneof![
            Just(PortProtocol::Tcp),
            Just(PortProtocol::Udp),
            Just(PortProtocol::Sctp)
        ],
        any::<u16>(),
        any::<u16>(),
        prop::option::of(label()),
    )
        .prop_map(
            |(name, protocol, port, target_port, app_protocol)| ServicePort {
                name,
                protocol,
                port,
                target_port,
                app_protocol,
            },
        )
}

/// A Kubernetes qualified name: an optional DNS subdomain prefix, then a name.
const QUALIFIED_NAME: &str = "([a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,2}/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,20}[A-Za-z0-9])?";
/// A label value: empty, or a name.
const LABEL_VALUE: &str = "([A-Za-z0-9]([A-Za-z0-9_.-]{0,20}[A-Za-z0-9])?)?";

/// Any properties that `validate()` accepts.
fn service_properties() -> impl Strategy<Value = ServiceProperties> {
    use IpFamily::{Ipv4, Ipv6};
    let families = prop_oneof![
        Just(vec![]),
        Just(vec![Ipv4]),
        Just(vec![Ipv6]),
        Just(vec![Ipv4, Ipv6]),
        Just(vec![Ipv6, Ipv4]),
    ];
    let affinity = prop_oneof![
        Just((SessionAffinity::None, None)),
        prop::option::of(1..=86_400u32).prop_map(|t| (SessionAffinity::ClientIp, t)),
    ];
    let policy = prop::option::of(prop_oneof![
        Just(InternalTrafficPolicy::Cluster),
        Just(InternalTrafficPolicy::Local)
    ]);
    (
        families,
        affinity,
        policy,
        prop::option::of(label()),
        prop::collection::btree_map(QUALIFIED_NAME, LABEL_VALUE, 0..4),
        prop::collection::btree_map(QUALIFIED_NAME, "\\PC{0,20}", 0..4),
        prop::sample::select(shoal_proto::Affinity::NAMES.map(|(_, a)| a).to_vec()),
    )
        .prop_map(
            |(
                ip_families,
                (session_affinity, timeout),
                policy,
                distribution,
                labels,
                notes,
                traffic,
            )| {
                ServiceProperties {
                    ip_families,
                    session_affinity,
                    client_ip_timeout_seconds: timeout,
                    internal_traffic_policy: policy,
                    traffic_distribution: distribution,
                    exported_labels: labels,
                    exported_annotations: notes,
                    affinity: traffic,
                }
            },
        )
}

/// Any record that `validate()` accepts, with small vectors so that cases stay fast.
fn export_record() -> impl Strategy<Value = ExportRecord> {
    (
        cluster_id(),
        service_key(),
        1..=u64::MAX,
        any::<u64>(),
        prop_oneof![Just(ServiceType::ClusterSetIp), Just(ServiceType::Headless)],
        prop::collection::vec(service_port(), 0..4),
        prop::collection::vec(endpoint(), 0..6),
        prop_oneof![Just(NetworkMode::Flat), Just(NetworkMode::Island)],
        service_properties(),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(
                origin,
                service,
                version,
                created,
                service_type,
                ports,
                endpoints,
                network,
                properties,
                tomb,
            )| {
                let (ports, endpoints, properties) = if tomb {
                    (vec![], vec![], ServiceProperties::default())
                } else {
                    (ports, endpoints, properties)
                };
                ExportRecord {
                    origin,
                    service,
                    version,
                    export_created_ms: created,
                    published_ms: 0,
                    service_type,
                    ports,
                    endpoints,
                    network,
                    properties,
                    tombstone: tomb,
                }
            },
        )
}

/// A record signed by its origin, and a ring that knows the origin's key.
fn signed_record() -> impl Strategy<Value = (SignedRecord, KeyRing)> {
    (export_record(), any::<[u8; 32]>()).prop_map(|(record, seed)| {
        let key = ClusterKey::from_seed(record.origin.clone(), seed);
        let mut ring = KeyRing::new();
        ring.insert(key.cluster().clone(), key.public())
            .expect("a key derived from a seed is strong");
        let signed = key.sign(record).expect("the strategy yields valid records");
        (signed.into_inner(), ring)
    })
}

/// A push of 1 to 3 records from one origin, and the ring to check it.
fn signed_push() -> impl Strategy<Value = (Vec<SignedRecord>, bool, KeyRing)> {
    (
        prop::collection::vec(export_record(), 1..=3),
        cluster_id(),
        any::<[u8; 32]>(),
        any::<bool>(),
    )
        .prop_map(|(records, origin, seed, relay)| {
            let key = ClusterKey::from_seed(origin.clone(), seed);
            let mut ring = KeyRing::new();
            ring.insert(origin.clone(), key.public())
                .expect("a key derived from a seed is strong");
            let signed = records
                .into_iter()
                .map(|mut record| {
                    record.origin = origin.clone();
                    key.sign(record).expect("valid record").into_inner()
                })
                .collect();
            (signed, relay, ring)
        })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config())]

    #[test]
    fn records_round_trip((signed, _ring) in signed_record()) {
        let bytes = encode_limited::<_, RECORD_BYTES_MAX>(&signed).expect("fits");
        let decoded: SignedRecord =
            decode_limited::<_, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(&bytes).expect("decodes");
        prop_assert_eq!(&decoded, &signed);
        let again = encode_limited::<_, RECORD_BYTES_MAX>(&decoded).expect("fits");
        prop_assert_eq!(again, bytes);

        let json = serde_json::to_string(&signed).expect("serializes");
        let from_json: SignedRecord = serde_json::from_str(&json).expect("deserializes");
        prop_assert_eq!(from_json, signed);
    }

    #[test]
    fn pushes_round_trip((records, relay, _ring) in signed_push()) {
        let message = Message::Push { records, relay };
        let bytes = message.encode().expect("fits a frame");
        prop_assert_eq!(Message::decode_frame(&bytes), Ok(message.clone()));
        prop_assert_eq!(Message::decode(&bytes), Ok(message));
    }

    #[test]
    fn swim_payloads_round_trip(payload in prop::collection::vec(any::<u8>(), 0..1_100)) {
        let message = Message::Swim(payload);
        let bytes = message.encode().expect("fits a datagram");
        prop_assert_eq!(Message::decode_datagram(&bytes), Ok(message.clone()));
        prop_assert_eq!(Message::decode(&bytes), Ok(message));
    }

    #[test]
    fn signed_records_verify((signed, ring) in signed_record()) {
        let verified = sign::verify(&ring, signed.clone()).expect("verifies");
        prop_assert_eq!(verified.get(), &signed);
    }

    #[test]
    fn a_record_verifies_only_under_its_own_key(
        record in export_record(),
        seed in any::<[u8; 32]>(),
        other_seed in any::<[u8; 32]>(),
    ) {
        prop_assume!(seed != other_seed);
        let key = ClusterKey::from_seed(record.origin.clone(), seed);
        let other = ClusterKey::from_seed(record.origin.clone(), other_seed);
        let signed = key.sign(record).expect("valid record").into_inner();
        let mut ring = KeyRing::new();
        ring.insert(other.cluster().clone(), other.public()).expect("strong key");
        prop_assert_eq!(
            sign::verify(&ring, signed.clone()),
            Err(VerifyError::BadSignature(signed.record.origin.clone()))
        );
    }

    #[test]
    fn a_flipped_byte_never_yields_a_different_valid_record(
        (records, relay, ring) in signed_push(),
        at in any::<Index>(),
        mask in 1..=u8::MAX,
    ) {
        let message = Message::Push { records: records.clone(), relay };
        let mut bytes = message.encode().expect("fits a frame");
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        // Never panics; if it decodes, no record in it is both new and valid.
        for decode in [Message::decode_frame, Message::decode] {
            let Ok(decoded) = decode(&bytes) else { continue };
            let Message::Push { records: smuggled, .. } = decoded else { continue };
            for candidate in smuggled {
                if let Ok(verified) = sign::verify(&ring, candidate) {
                    prop_assert!(
                        records.contains(verified.get()),
                        "a flip at byte {} (mask {:#04x}) produced a new valid record: {:?}",
                        at, mask, verified.get()
                    );
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2_048)) {
        // A decoded value must also re-encode canonically and decode to itself.
        if let Ok(message) = Message::decode(&bytes) {
            prop_assert_reencodes(&message)?;
        }
        let _ = Message::decode_datagram(&bytes);
        let _ = Message::decode_frame(&bytes);
        let _ = decode_limited::<SignedRecord, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(&bytes);
        let _ = decode_limited::<ExportRecord, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(&bytes);
    }

    #[test]
    fn random_bytes_after_a_message_tag_never_panic(
        tag in 0u8..5,
        count in 0u8..4,
        rest in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        // Random bytes rarely get past the first byte; start each variant with a small,
        // plausible element count so that the field decoders are exercised too.
        let mut bytes = vec![tag, count];
        bytes.extend_from_slice(&rest);
        if let Ok(message) = Message::decode(&bytes) {
            prop_assert_reencodes(&message)?;
        }
    }
}

/// A decoded message re-encodes within the frame limit (canonical bytes are never longer
/// than the bytes it came from) and decodes back to itself.
///
/// `Message::encode` is not used: it applies the datagram limit to `Swim`, while
/// `decode_frame` accepts a `Swim` of any size up to the frame limit.
fn prop_assert_reencodes(message: &Message) -> Result<(), TestCaseError> {
    let again = encode_limited::<_, FRAME_BYTES_MAX>(message).expect("re-encodes");
    let decoded = Message::decode(&again);
    prop_assert_eq!(decoded.as_ref(), Ok(message));
    Ok(())
}
