//! Round trips, signatures and every refusal the proto crate promises.

mod common;

use common::{cluster, key, record, ring, service, signed};
use shoal_proto::codec::{
    self, DATAGRAM_BYTES_MAX, DATAGRAM_DECODE_BUDGET, FRAME_BYTES_MAX, RECORD_BYTES_MAX,
    RECORD_DECODE_BUDGET, decode_limited, encode_limited,
};
use shoal_proto::lease::LEASE_MS_MAX;
use shoal_proto::record::{
    ADDRESSES_PER_ENDPOINT_MAX, ANNOTATIONS_BYTES_MAX, APP_PROTOCOL_BYTES_MAX,
    CLIENT_IP_TIMEOUT_SECONDS_MAX, ENDPOINTS_PER_RECORD_MAX, EXPORTED_ANNOTATIONS_MAX,
    EXPORTED_LABELS_MAX, LABEL_BYTES_MAX, LABEL_VALUE_BYTES_MAX, METADATA_KEY_BYTES_MAX,
    PORTS_PER_RECORD_MAX, TRAFFIC_DISTRIBUTION_BYTES_MAX,
};
use shoal_proto::sign;
use shoal_proto::wire::{
    MEMBERS_PER_MESSAGE_MAX, ORIGINS_PER_MESSAGE_MAX, RECORDS_PER_MESSAGE_MAX, REFS_PER_ORIGIN_MAX,
};
use shoal_proto::{
    Channel, ClusterId, DecodeError, EncodeError, Endpoint, EndpointConditions, ExportRecord,
    FencingToken, Grant, InternalTrafficPolicy, IpAddress, IpFamily, LeaseMessage, LeaseName,
    MemberId, Message, NetAddr, OriginSummary, OriginWant, PortProtocol, RecordError, RecordRef,
    ReplicaId, ServiceKey, ServicePort, ServiceProperties, SessionAffinity, SignedRecord,
    SwimIdentity, VerifyError,
};

fn every_message() -> Vec<Message> {
    let a = key("cluster-a", 1);
    let b = key("cluster-b", 2);
    vec![
        Message::Swim(vec![]),
        Message::Swim((0..=255).collect()),
        Message::Push {
            records: vec![],
            relay: false,
        },
        Message::Push {
            records: vec![signed(&a, 1), signed(&b, u64::MAX)],
            relay: true,
        },
        Message::DigestRoot {
            root: 0,
            records: 0,
            members: 0,
        },
        Message::DigestRoot {
            root: u64::MAX,
            records: 123_456,
            members: u64::MAX,
        },
        Message::Members {
            members: vec![],
            reply: true,
        },
        Message::Members {
            members: vec![SwimIdentity {
                member: MemberId {
                    cluster: cluster("cluster-a"),
                    replica: ReplicaId(2),
                },
                addr: NetAddr {
                    ip: [1; 16],
                    port: 7946,
                },
                generation: 9,
            }],
            reply: false,
        },
        Message::DigestOrigins { entries: vec![] },
        Message::DigestOrigins {
            entries: vec![
                OriginSummary {
                    origin: cluster("cluster-a"),
                    max_version: 17,
                    hash: 0xdead_beef_0bad_cafe,
                    records: 3,
                },
                OriginSummary {
                    origin: cluster("cluster-b"),
                    max_version: u64::MAX,
                    hash: 0,
                    records: u32::MAX,
                },
            ],
        },
        Message::Pull { wants: vec![] },
        Message::Pull {
            wants: vec![
                OriginWant {
                    origin: cluster("cluster-a"),
                    have: vec![],
                },
                OriginWant {
                    origin: cluster("cluster-b"),
                    have: vec![
                        RecordRef {
                            service: service("payments", "api"),
                            version: 9,
                        },
                        RecordRef {
                            service: service("default", "web"),
                            version: 1,
                        },
                    ],
                },
            ],
        },
    ]
}

#[test]
fn every_message_variant_round_trips() {
    let messages = every_message();
    let kinds: std::collections::BTreeSet<_> = messages.iter().map(Message::kind).collect();
    assert_eq!(kinds.len(), 6, "every variant is covered: {kinds:?}");

    for message in messages {
        let bytes = message
            .encode()
            .expect("fixture messages fit their channel");
        let decoded = match message.channel() {
            Channel::Datagram => Message::decode_datagram(&bytes),
            Channel::Stream => Message::decode_frame(&bytes),
        };
        assert_eq!(decoded.as_ref(), Ok(&message), "{}", message.kind());
        assert_eq!(Message::decode(&bytes).as_ref(), Ok(&message));
        // Canonical: decoding then encoding gives back the very same bytes.
        let again = decoded
            .expect("checked above")
            .encode()
            .expect("re-encodes");
        assert_eq!(again, bytes, "{}", message.kind());
    }
}

#[test]
fn channels_follow_the_variant() {
    for message in every_message() {
        let expected = match message {
            Message::Swim(_) => Channel::Datagram,
            _ => Channel::Stream,
        };
        assert_eq!(message.channel(), expected, "{}", message.kind());
    }
}

#[test]
fn signed_record_round_trips_through_the_codec_and_json() {
    let signed = signed(&key("cluster-a", 1), 42);
    let bytes = encode_limited::<_, RECORD_BYTES_MAX>(&signed).expect("fits");
    let decoded: SignedRecord =
        decode_limited::<_, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(&bytes).expect("decodes");
    assert_eq!(decoded, signed);

    let json = serde_json::to_string(&signed).expect("serializes");
    let from_json: SignedRecord = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(from_json, signed);
}

#[test]
fn swim_identity_and_net_addr_round_trip() {
    let identity = SwimIdentity {
        member: MemberId {
            cluster: cluster("cluster-a"),
            replica: ReplicaId(3),
        },
        addr: NetAddr::from(
            "192.0.2.7:7946"
                .parse::<std::net::SocketAddr>()
                .expect("addr"),
        ),
        generation: 11,
    };
    let bytes = encode_limited::<_, DATAGRAM_BYTES_MAX>(&identity).expect("fits");
    let decoded: SwimIdentity =
        decode_limited::<_, DATAGRAM_BYTES_MAX, DATAGRAM_DECODE_BUDGET>(&bytes).expect("decodes");
    assert_eq!(decoded, identity);
    assert_eq!(decoded.addr.to_string(), "192.0.2.7:7946");
}

// ---------------------------------------------------------------------------------------
// Signatures

#[test]
fn signing_then_verifying_succeeds() {
    let a = key("cluster-a", 1);
    let ring = ring(&[&a]);
    let signed = a.sign(record("cluster-a", 5)).expect("own record");
    let verified = sign::verify(&ring, signed.get().clone()).expect("verifies");
    assert_eq!(verified.get(), signed.get());
    assert_eq!(verified.record.version, 5);
}

#[test]
fn signatures_are_deterministic() {
    let a = key("cluster-a", 1);
    assert_eq!(signed(&a, 5), signed(&a, 5));
    assert_ne!(signed(&a, 5).signature, signed(&a, 6).signature);
}

fn assert_bad_signature(ring: &shoal_proto::KeyRing, tampered: SignedRecord) {
    let origin = tampered.record.origin.clone();
    assert_eq!(
        sign::verify(ring, tampered),
        Err(VerifyError::BadSignature(origin))
    );
}

/// Changes one field of a signed record in place.
type Tamper = fn(&mut SignedRecord);

#[test]
fn tampering_with_any_field_breaks_the_signature() {
    let a = key("cluster-a", 1);
    let b = key("cluster-b", 2);
    let ring = ring(&[&a, &b]);
    let original = signed(&a, 5);
    assert!(sign::verify(&ring, original.clone()).is_ok());

    let tamperings: Vec<(&str, Tamper)> = vec![
        ("version", |s| s.record.version += 1),
        ("export_created_ms", |s| s.record.export_created_ms -= 1),
        ("endpoint address", |s| {
            s.record.endpoints[0].addresses[0] = IpAddress::V4([10, 0, 0, 99]);
        }),
        ("endpoint readiness", |s| {
            s.record.endpoints[1].conditions.ready = true;
        }),
        ("extra endpoint", |s| {
            let copy = s.record.endpoints[0].clone();
            s.record.endpoints.push(copy);
        }),
        ("port", |s| s.record.ports[0].port = 8443),
        ("ip families", |s| s.record.properties.ip_families.reverse()),
        ("session affinity", |s| {
            s.record.properties.session_affinity = SessionAffinity::None;
            s.record.properties.client_ip_timeout_seconds = None;
        }),
        ("client IP timeout", |s| {
            s.record.properties.client_ip_timeout_seconds = Some(60)
        }),
        ("internal traffic policy", |s| {
            s.record.properties.internal_traffic_policy = Some(InternalTrafficPolicy::Local)
        }),
        ("traffic distribution", |s| {
            s.record.properties.traffic_distribution = None
        }),
        ("exported label", |s| {
            s.record
                .properties
                .exported_labels
                .insert("tier".into(), "web".into());
        }),
        ("exported annotation", |s| {
            s.record.properties.exported_annotations.clear();
        }),
        ("service", |s| {
            s.record.service = service("payments", "admin")
        }),
        ("origin", |s| s.record.origin = cluster("cluster-b")),
        ("signature", |s| s.signature[0] ^= 1),
        ("signature tail", |s| s.signature[63] ^= 0x40),
    ];
    for (what, tamper) in tamperings {
        let mut tampered = original.clone();
        tamper(&mut tampered);
        assert_ne!(
            tampered, original,
            "{what}: the tampering changed something"
        );
        let origin = tampered.record.origin.clone();
        assert_eq!(
            sign::verify(&ring, tampered),
            Err(VerifyError::BadSignature(origin)),
            "{what}"
        );
    }
}

#[test]
fn a_cluster_cannot_author_another_clusters_record() {
    let a = key("cluster-a", 1);
    let b = key("cluster-b", 2);
    let ring = ring(&[&a, &b]);

    // B signs a record claiming origin A.
    let forged = b.sign_unchecked(record("cluster-a", 5));
    assert_bad_signature(&ring, forged);

    // And the checked signer refuses to do it at all.
    assert_eq!(
        b.sign(record("cluster-a", 5)).map(|v| v.into_inner()),
        Err(VerifyError::BadSignature(cluster("cluster-a")))
    );
}

#[test]
fn a_record_from_an_unknown_origin_is_refused() {
    let a = key("cluster-a", 1);
    let stranger = key("cluster-z", 26);
    let ring = ring(&[&a]);
    assert_eq!(
        sign::verify(&ring, signed(&stranger, 1)),
        Err(VerifyError::UnknownOrigin(cluster("cluster-z")))
    );
    // A known cluster id with the wrong key is a bad signature, not an unknown origin.
    let impostor = key("cluster-a", 99);
    assert_bad_signature(&ring, signed(&impostor, 1));
}

#[test]
fn a_malleated_signature_is_refused() {
    // ed25519 signatures are (R, S) with S < L. Adding the group order L to S gives a
    // signature that lax verifiers accept; verify_strict must refuse it.
    const ORDER_L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let a = key("cluster-a", 1);
    let ring = ring(&[&a]);
    let mut malleated = signed(&a, 5);
    let mut carry = 0u16;
    for (s, l) in malleated.signature[32..].iter_mut().zip(ORDER_L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits");
    assert_bad_signature(&ring, malleated);
}

#[test]
fn invalid_records_are_neither_signed_nor_verified() {
    let a = key("cluster-a", 1);
    let ring = ring(&[&a]);
    assert_eq!(
        a.sign(record("cluster-a", 0)).map(|v| v.into_inner()),
        Err(VerifyError::Invalid(RecordError::ZeroVersion))
    );
    let unsigned_zero = a.sign_unchecked(record("cluster-a", 0));
    assert_eq!(
        sign::verify(&ring, unsigned_zero),
        Err(VerifyError::Invalid(RecordError::ZeroVersion))
    );
}

#[test]
fn the_key_ring_refuses_weak_keys() {
    let mut ring = shoal_proto::KeyRing::new();
    // The identity point: small order, so it would verify forged signatures.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        ring.insert(cluster("cluster-a"), identity),
        Err(shoal_proto::KeyRingError::BadKey(cluster("cluster-a")))
    );
    assert!(ring.is_empty());
    let a = key("cluster-a", 1);
    assert_eq!(ring.insert(cluster("cluster-a"), a.public()), Ok(()));
    assert!(ring.contains(&cluster("cluster-a")));
    assert_eq!(ring.len(), 1);
}

#[test]
fn key_ring_indexes_follow_first_insertion_and_survive_a_key_change() {
    let mut ring = shoal_proto::KeyRing::new();
    ring.insert(cluster("cluster-b"), key("cluster-b", 2).public())
        .unwrap();
    ring.insert(cluster("cluster-a"), key("cluster-a", 1).public())
        .unwrap();
    ring.insert(cluster("cluster-b"), key("cluster-b", 3).public())
        .unwrap();
    assert_eq!(ring.index(&cluster("cluster-b")), Some(0));
    assert_eq!(ring.index(&cluster("cluster-a")), Some(1));
    assert_eq!(ring.index(&cluster("cluster-c")), None);
    assert_eq!(
        ring.public(&cluster("cluster-b")),
        Some(key("cluster-b", 3).public())
    );
}

#[test]
fn digest_hash_depends_on_identity_version_and_signature() {
    let a = key("cluster-a", 1);
    let base = signed(&a, 5);
    assert_eq!(base.digest_hash(), signed(&a, 5).digest_hash());
    assert_ne!(base.digest_hash(), signed(&a, 6).digest_hash());
    let mut other_signature = base.clone();
    other_signature.signature[10] ^= 1;
    assert_ne!(base.digest_hash(), other_signature.digest_hash());
    let mut other_service = base.clone();
    other_service.record.service = service("payments", "apj");
    assert_ne!(base.digest_hash(), other_service.digest_hash());
    assert_eq!(
        base.reference(),
        RecordRef {
            service: service("payments", "api"),
            version: 5
        }
    );
}

// ---------------------------------------------------------------------------------------
// Decoder refusals

#[test]
fn trailing_bytes_are_refused() {
    for message in every_message() {
        let mut bytes = message.encode().expect("fits");
        bytes.extend_from_slice(&[0, 0, 0]);
        let refused = match message.channel() {
            Channel::Datagram => Message::decode_datagram(&bytes),
            Channel::Stream => Message::decode_frame(&bytes),
        };
        assert_eq!(refused, Err(DecodeError::Trailing(3)), "{}", message.kind());
        assert_eq!(Message::decode(&bytes), Err(DecodeError::Trailing(3)));
    }

    let mut record_bytes =
        encode_limited::<_, RECORD_BYTES_MAX>(&signed(&key("cluster-a", 1), 1)).expect("fits");
    record_bytes.push(0);
    assert_eq!(
        decode_limited::<SignedRecord, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(&record_bytes),
        Err(DecodeError::Trailing(1))
    );
}

#[test]
fn stream_messages_are_refused_as_datagrams() {
    let mut refused = 0;
    for message in every_message() {
        if message.channel() != Channel::Stream {
            continue;
        }
        let bytes = message.encode().expect("fits");
        assert!(
            bytes.len() <= DATAGRAM_BYTES_MAX,
            "small enough to be a datagram"
        );
        assert!(
            matches!(
                Message::decode_datagram(&bytes),
                Err(DecodeError::Malformed(_))
            ),
            "{} accepted as a datagram",
            message.kind()
        );
        refused += 1;
    }
    assert_eq!(refused, 10);
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let datagram = vec![0u8; DATAGRAM_BYTES_MAX + 1];
    assert_eq!(
        Message::decode_datagram(&datagram),
        Err(DecodeError::TooLarge {
            len: DATAGRAM_BYTES_MAX + 1,
            limit: DATAGRAM_BYTES_MAX
        })
    );
    let frame = vec![0u8; FRAME_BYTES_MAX + 1];
    assert_eq!(
        Message::decode_frame(&frame),
        Err(DecodeError::TooLarge {
            len: FRAME_BYTES_MAX + 1,
            limit: FRAME_BYTES_MAX
        })
    );
    assert_eq!(
        Message::decode(&frame),
        Err(DecodeError::TooLarge {
            len: FRAME_BYTES_MAX + 1,
            limit: FRAME_BYTES_MAX
        })
    );
    let record = vec![0u8; RECORD_BYTES_MAX + 1];
    assert_eq!(
        decode_limited::<SignedRecord, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(&record),
        Err(DecodeError::TooLarge {
            len: RECORD_BYTES_MAX + 1,
            limit: RECORD_BYTES_MAX
        })
    );
}

#[test]
fn oversized_messages_are_refused_by_the_encoder() {
    // Swim(payload) costs 1 byte of variant, 3 bytes of length (payload >= 251), payload.
    let largest = Message::Swim(vec![0xaa; DATAGRAM_BYTES_MAX - 4]);
    let bytes = largest.encode().expect("exactly fits a datagram");
    assert_eq!(bytes.len(), DATAGRAM_BYTES_MAX);

    let too_large = Message::Swim(vec![0xaa; DATAGRAM_BYTES_MAX - 3]);
    assert_eq!(
        too_large.encode(),
        Err(EncodeError::TooLarge {
            limit: DATAGRAM_BYTES_MAX
        })
    );
    assert_eq!(
        encode_limited::<_, 8>(&[0u8; 9]),
        Err(EncodeError::TooLarge { limit: 8 })
    );
}

/// Each bound `check_bounds` enforces, as (what, a message at it, one just over it).
fn bounded_messages() -> Vec<(&'static str, Message, Message)> {
    let one = signed(&key("cluster-a", 1), 1);
    let push = |n| Message::Push {
        records: vec![one.clone(); n],
        relay: false,
    };
    let summary = OriginSummary {
        origin: cluster("a"),
        max_version: 1,
        hash: 1,
        records: 1,
    };
    let digest = |n| Message::DigestOrigins {
        entries: vec![summary.clone(); n],
    };
    let want = OriginWant {
        origin: cluster("a"),
        have: vec![],
    };
    let pull = |n| Message::Pull {
        wants: vec![want.clone(); n],
    };
    let reference = RecordRef {
        service: service("a", "b"),
        version: 1,
    };
    let refs = |n| Message::Pull {
        wants: vec![
            want.clone(),
            OriginWant {
                origin: cluster("b"),
                have: vec![reference.clone(); n],
            },
        ],
    };
    let identity = SwimIdentity {
        member: MemberId {
            cluster: cluster("a"),
            replica: ReplicaId(0),
        },
        addr: NetAddr {
            ip: [0; 16],
            port: 1,
        },
        generation: 1,
    };
    let members = |n| Message::Members {
        members: vec![identity.clone(); n],
        reply: false,
    };
    let propose = |lease_ms| {
        Message::Lease(LeaseMessage::Propose {
            lease: LeaseName::new("payments").expect("a valid name"),
            round: 1,
            grant: Grant {
                holder: cluster("a"),
                token: FencingToken(1),
                lease_ms,
            },
        })
    };
    vec![
        (
            "records per push",
            push(RECORDS_PER_MESSAGE_MAX),
            push(RECORDS_PER_MESSAGE_MAX + 1),
        ),
        (
            "origins per digest",
            digest(ORIGINS_PER_MESSAGE_MAX),
            digest(ORIGINS_PER_MESSAGE_MAX + 1),
        ),
        (
            "origins per pull",
            pull(ORIGINS_PER_MESSAGE_MAX),
            pull(ORIGINS_PER_MESSAGE_MAX + 1),
        ),
        (
            "refs per origin",
            refs(REFS_PER_ORIGIN_MAX),
            refs(REFS_PER_ORIGIN_MAX + 1),
        ),
        (
            "members per list",
            members(MEMBERS_PER_MESSAGE_MAX),
            members(MEMBERS_PER_MESSAGE_MAX + 1),
        ),
        (
            "lease length",
            propose(LEASE_MS_MAX),
            propose(LEASE_MS_MAX + 1),
        ),
    ]
}

#[test]
fn every_bound_the_decoder_enforces_the_encoder_enforces_too() {
    for (what, at, over) in bounded_messages() {
        assert_eq!(at.check_bounds(), Ok(()), "{what}");
        let bytes = at.encode().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(Message::decode_frame(&bytes).as_ref(), Ok(&at), "{what}");

        assert!(over.check_bounds().is_err(), "{what}");
        assert!(
            matches!(over.encode(), Err(EncodeError::OverBound(_))),
            "{what}: the encoder refuses what every peer would drop"
        );
        // Encoded by hand, past the check, the same message fits a frame by size and
        // the decoder still refuses it.
        let bytes = encode_limited::<_, FRAME_BYTES_MAX>(&over).expect("fits a frame by size");
        assert!(
            matches!(
                Message::decode_frame(&bytes),
                Err(DecodeError::Malformed(_))
            ),
            "{what}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Record validation

fn endpoint(addresses: Vec<IpAddress>) -> Endpoint {
    Endpoint {
        addresses,
        conditions: EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        },
        zone: None,
        hostname: None,
    }
}

fn validate_with(change: impl FnOnce(&mut ExportRecord)) -> Result<(), RecordError> {
    let mut r = record("cluster-a", 1);
    change(&mut r);
    r.validate()
}

#[test]
fn the_fixture_record_is_valid() {
    assert_eq!(validate_with(|_| {}), Ok(()));
    assert_eq!(
        validate_with(|r| {
            r.tombstone = true;
            r.ports.clear();
            r.endpoints.clear();
            r.properties = ServiceProperties::default();
        }),
        Ok(())
    );
}

#[test]
fn zero_version_is_refused() {
    assert_eq!(
        validate_with(|r| r.version = 0),
        Err(RecordError::ZeroVersion)
    );
}

#[test]
fn a_tombstone_carries_nothing() {
    assert_eq!(
        validate_with(|r| {
            r.tombstone = true;
            r.endpoints.clear();
        }),
        Err(RecordError::TombstoneWithContent)
    );
    assert_eq!(
        validate_with(|r| {
            r.tombstone = true;
            r.ports.clear();
        }),
        Err(RecordError::TombstoneWithContent)
    );
    assert_eq!(
        validate_with(|r| {
            r.tombstone = true;
            r.ports.clear();
            r.endpoints.clear();
        }),
        Err(RecordError::TombstoneWithContent),
        "properties too"
    );
}

#[test]
fn ip_families_are_at_most_one_of_each() {
    use IpFamily::{Ipv4, Ipv6};
    for ok in [vec![], vec![Ipv6], vec![Ipv6, Ipv4]] {
        assert_eq!(
            validate_with(|r| r.properties.ip_families = ok.clone()),
            Ok(())
        );
    }
    for bad in [vec![Ipv4, Ipv4], vec![Ipv4, Ipv6, Ipv4]] {
        assert_eq!(
            validate_with(|r| r.properties.ip_families = bad.clone()),
            Err(RecordError::IpFamilies(bad))
        );
    }
}

#[test]
fn a_client_ip_timeout_needs_client_ip_affinity_and_kubernetes_range() {
    let timeout = |affinity, seconds| {
        validate_with(|r| {
            r.properties.session_affinity = affinity;
            r.properties.client_ip_timeout_seconds = seconds;
        })
    };
    assert_eq!(timeout(SessionAffinity::ClientIp, None), Ok(()));
    assert_eq!(timeout(SessionAffinity::ClientIp, Some(1)), Ok(()));
    let max = CLIENT_IP_TIMEOUT_SECONDS_MAX;
    assert_eq!(timeout(SessionAffinity::ClientIp, Some(max)), Ok(()));
    assert_eq!(
        timeout(SessionAffinity::ClientIp, Some(max + 1)),
        Err(RecordError::ClientIpTimeout(max + 1))
    );
    assert_eq!(
        timeout(SessionAffinity::ClientIp, Some(0)),
        Err(RecordError::ClientIpTimeout(0))
    );
    assert_eq!(timeout(SessionAffinity::None, None), Ok(()));
    assert_eq!(
        timeout(SessionAffinity::None, Some(10)),
        Err(RecordError::TimeoutWithoutClientIp)
    );
}

/// A key of exactly [`METADATA_KEY_BYTES_MAX`] bytes: a 253-byte prefix and a 63-byte
/// name, told apart by `tag`.
fn longest_key(tag: usize) -> String {
    let prefix = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    let key = format!("{prefix}/{tag:0>63}");
    assert_eq!(key.len(), METADATA_KEY_BYTES_MAX);
    key
}

#[test]
fn exported_labels_are_what_kubernetes_accepts() {
    let label = |k: &str, v: &str| {
        validate_with(|r| {
            r.properties.exported_labels = [(k.to_owned(), v.to_owned())].into();
        })
    };
    for (k, v) in [
        ("app", ""),
        ("app", "web"),
        ("example.com/tier", "a.b_c-d"),
        ("A_b.c-D", "0"),
    ] {
        assert_eq!(label(k, v), Ok(()), "{k}={v}");
    }
    assert_eq!(
        label(&longest_key(1), &"v".repeat(LABEL_VALUE_BYTES_MAX)),
        Ok(())
    );
    let too_long_key = format!("{}x", longest_key(1));
    assert!(
        matches!(label(&too_long_key, "v"), Err(RecordError::MetadataKey(k)) if k.ends_with('…'))
    );
    for bad in [
        "",
        "-app",
        "app-",
        "a/b/c",
        "/app",
        "Example.com/app",
        "a b",
        "é",
    ] {
        assert_eq!(
            label(bad, "v"),
            Err(RecordError::MetadataKey(bad.to_owned())),
            "{bad:?}"
        );
    }
    let long_value = "v".repeat(LABEL_VALUE_BYTES_MAX + 1);
    assert!(matches!(
        label("app", &long_value),
        Err(RecordError::LabelValue(_))
    ));
    for bad in ["-v", "v-", "a/b", "a b"] {
        assert_eq!(
            label("app", bad),
            Err(RecordError::LabelValue(bad.to_owned())),
            "{bad:?}"
        );
    }
    let many = |n: usize| {
        validate_with(|r| {
            r.properties.exported_labels = (0..n).map(|i| (format!("l{i}"), "v".into())).collect();
        })
    };
    assert_eq!(many(EXPORTED_LABELS_MAX), Ok(()));
    assert_eq!(
        many(EXPORTED_LABELS_MAX + 1),
        Err(RecordError::TooManyLabels(EXPORTED_LABELS_MAX + 1))
    );
}

#[test]
fn exported_annotations_are_bounded_in_count_and_bytes() {
    let annotate = |pairs: Vec<(String, String)>| {
        validate_with(|r| r.properties.exported_annotations = pairs.into_iter().collect())
    };
    // Any value; keys as Kubernetes checks them, in lowercase.
    let free = vec![
        (
            "Example.com/Owner".to_owned(),
            "any text: ä / {}".to_owned(),
        ),
        ("note".to_owned(), String::new()),
    ];
    assert_eq!(annotate(free), Ok(()));
    assert_eq!(
        annotate(vec![("a/b/c".to_owned(), "v".to_owned())]),
        Err(RecordError::MetadataKey("a/b/c".to_owned()))
    );
    // Exactly the byte bound, keys and values together, then one byte more.
    let key = "example.com/big".to_owned();
    let value = "v".repeat(ANNOTATIONS_BYTES_MAX - key.len());
    assert_eq!(annotate(vec![(key.clone(), value.clone())]), Ok(()));
    assert_eq!(
        annotate(vec![(key, format!("{value}v"))]),
        Err(RecordError::AnnotationsTooLarge(ANNOTATIONS_BYTES_MAX + 1))
    );
    let many = |n: usize| (0..n).map(|i| (format!("a{i}"), String::new())).collect();
    assert_eq!(annotate(many(EXPORTED_ANNOTATIONS_MAX)), Ok(()));
    assert_eq!(
        annotate(many(EXPORTED_ANNOTATIONS_MAX + 1)),
        Err(RecordError::TooManyAnnotations(
            EXPORTED_ANNOTATIONS_MAX + 1
        ))
    );
}

#[test]
fn the_traffic_distribution_is_bounded() {
    let max = TRAFFIC_DISTRIBUTION_BYTES_MAX;
    assert_eq!(
        validate_with(|r| r.properties.traffic_distribution = Some("x".repeat(max))),
        Ok(())
    );
    assert_eq!(
        validate_with(|r| r.properties.traffic_distribution = Some("x".repeat(max + 1))),
        Err(RecordError::TrafficDistributionTooLong(max + 1))
    );
}

#[test]
fn endpoint_and_port_counts_are_bounded() {
    let one = endpoint(vec![IpAddress::V4([10, 0, 0, 1])]);
    assert_eq!(
        validate_with(|r| r.endpoints = vec![one.clone(); ENDPOINTS_PER_RECORD_MAX]),
        Ok(())
    );
    assert_eq!(
        validate_with(|r| r.endpoints = vec![one.clone(); ENDPOINTS_PER_RECORD_MAX + 1]),
        Err(RecordError::TooManyEndpoints(ENDPOINTS_PER_RECORD_MAX + 1))
    );
    let port = ServicePort {
        name: "p".to_owned(),
        protocol: PortProtocol::Sctp,
        port: 1,
        target_port: 1,
        app_protocol: None,
    };
    let ports_max = shoal_proto::record::PORTS_PER_RECORD_MAX;
    assert_eq!(
        validate_with(|r| r.ports = vec![port.clone(); ports_max]),
        Ok(())
    );
    assert_eq!(
        validate_with(|r| r.ports = vec![port.clone(); ports_max + 1]),
        Err(RecordError::TooManyPorts(ports_max + 1))
    );
}

#[test]
fn each_endpoint_has_one_or_two_addresses() {
    let v4 = IpAddress::V4([10, 0, 0, 1]);
    let v6 = IpAddress::V6([0; 16]);
    assert_eq!(
        validate_with(|r| r.endpoints = vec![endpoint(vec![])]),
        Err(RecordError::AddressCount(0))
    );
    assert_eq!(
        validate_with(|r| r.endpoints = vec![endpoint(vec![v4, v6])]),
        Ok(())
    );
    assert_eq!(
        validate_with(|r| {
            r.endpoints
                .push(endpoint(vec![v4; ADDRESSES_PER_ENDPOINT_MAX + 1]));
        }),
        Err(RecordError::AddressCount(ADDRESSES_PER_ENDPOINT_MAX + 1))
    );
}

/// Sets one free-text field of a record.
type SetText = fn(&mut ExportRecord, String);

#[test]
fn every_text_field_is_bounded() {
    let setters: Vec<(&str, usize, SetText)> = vec![
        ("port name", LABEL_BYTES_MAX, |r, s| r.ports[0].name = s),
        ("app protocol", APP_PROTOCOL_BYTES_MAX, |r, s| {
            r.ports[1].app_protocol = Some(s)
        }),
        ("zone", LABEL_BYTES_MAX, |r, s| {
            r.endpoints[1].zone = Some(s)
        }),
        ("hostname", LABEL_BYTES_MAX, |r, s| {
            r.endpoints[0].hostname = Some(s)
        }),
    ];
    for (what, max, set) in setters {
        assert_eq!(validate_with(|r| set(r, "x".repeat(max))), Ok(()), "{what}");
        assert_eq!(
            validate_with(|r| set(r, "x".repeat(max + 1))),
            Err(RecordError::LabelTooLong(max + 1)),
            "{what}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Identifiers are validated on every way in

#[test]
fn invalid_ids_fail_to_deserialize_from_json() {
    assert_eq!(
        serde_json::from_str::<ClusterId>("\"us-east-1\"").expect("valid"),
        cluster("us-east-1")
    );
    for bad in [
        "\"\"",
        "\"US-East\"",
        "\"-a\"",
        "\"a-\"",
        "\"a.b\"",
        "\"a b\"",
        &format!("\"{}\"", "a".repeat(64)),
    ] {
        assert!(
            serde_json::from_str::<ClusterId>(bad).is_err(),
            "{bad} accepted"
        );
    }
    assert!(serde_json::from_str::<ServiceKey>(r#"{"namespace":"Default","name":"web"}"#).is_err());
    assert!(serde_json::from_str::<ServiceKey>(r#"{"namespace":"default","name":"web"}"#).is_ok());
    assert!(serde_json::from_str::<MemberId>(r#"{"cluster":"a_b","replica":0}"#).is_err());

    // Inside a whole signed record, too.
    let signed = signed(&key("cluster-a", 1), 1);
    let json = serde_json::to_string(&signed).expect("serializes");
    assert!(json.contains("\"cluster-a\""));
    let bad = json.replace("\"cluster-a\"", "\"Cluster-A\"");
    assert!(serde_json::from_str::<SignedRecord>(&bad).is_err());
}

#[test]
fn ids_serialize_as_plain_strings() {
    assert_eq!(
        serde_json::to_string(&cluster("us-east-1")).expect("serializes"),
        "\"us-east-1\""
    );
}

#[test]
fn invalid_ids_fail_to_decode_from_bytes() {
    for bad in ["", "US", "a_b", "-a", &"a".repeat(64)] {
        let bytes = encode_limited::<_, 128>(&bad.to_owned()).expect("a string encodes");
        assert!(
            matches!(
                decode_limited::<ClusterId, 128, 2048>(&bytes),
                Err(DecodeError::Malformed(_))
            ),
            "{bad:?} decoded as a cluster id"
        );
    }
    let good = encode_limited::<_, 128>(&"us-east-1".to_owned()).expect("encodes");
    assert_eq!(
        decode_limited::<ClusterId, 128, 2048>(&good),
        Ok(cluster("us-east-1"))
    );
}

#[test]
fn an_invalid_id_inside_a_frame_fails_to_decode() {
    let message = Message::Push {
        records: vec![signed(&key("cluster-a", 1), 1)],
        relay: false,
    };
    let bytes = message.encode().expect("fits");
    assert!(Message::decode_frame(&bytes).is_ok());

    // Same length, so only the validation can object.
    for (from, to) in [
        (&b"cluster-a"[..], &b"Cluster-a"[..]),
        (b"payments", b"pay_ents"),
        (b"api", b"ap-"),
    ] {
        let at = find(&bytes, from).expect("the id is in the encoding");
        let mut corrupted = bytes.clone();
        corrupted[at..at + to.len()].copy_from_slice(to);
        assert!(
            matches!(
                Message::decode_frame(&corrupted),
                Err(DecodeError::Malformed(_))
            ),
            "{} accepted",
            String::from_utf8_lossy(to)
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn endpoints_with_labels(label_bytes: usize) -> Vec<Endpoint> {
    let label = "x".repeat(label_bytes);
    vec![
        Endpoint {
            addresses: vec![IpAddress::V6([0xff; 16]); ADDRESSES_PER_ENDPOINT_MAX],
            conditions: EndpointConditions {
                ready: true,
                serving: true,
                terminating: true,
            },
            zone: Some(label.clone()),
            hostname: Some(label),
        };
        ENDPOINTS_PER_RECORD_MAX
    ]
}

#[test]
fn a_full_record_with_kubernetes_sized_labels_fits_and_signs() {
    // Kubernetes bounds an EndpointSlice hostname and a zone label value to 63 bytes.
    let a = key("cluster-a", 1);
    let mut big = record("cluster-a", 1);
    big.endpoints = endpoints_with_labels(63);
    let signed = a
        .sign(big)
        .expect("1,000 dual-stack endpoints fit the record limit");
    let verified = sign::verify(&ring(&[&a]), signed.into_inner()).expect("verifies");
    assert_eq!(verified.record.endpoints.len(), ENDPOINTS_PER_RECORD_MAX);
}

#[test]
fn every_valid_record_fits_the_record_limit_and_signs() {
    // validate() must imply signable: a record at every bound at once still encodes
    // within RECORD_BYTES_MAX, so signing never fails for size.
    let a = key("cluster-a", 1);
    let mut big = record("cluster-a", 1);
    big.endpoints = endpoints_with_labels(LABEL_BYTES_MAX);
    big.ports = (0..PORTS_PER_RECORD_MAX)
        .map(|i| ServicePort {
            name: format!("{i:0>63}"),
            protocol: PortProtocol::Sctp,
            port: u16::MAX,
            target_port: u16::MAX,
            app_protocol: Some("x".repeat(APP_PROTOCOL_BYTES_MAX)),
        })
        .collect();
    big.properties.traffic_distribution = Some("x".repeat(TRAFFIC_DISTRIBUTION_BYTES_MAX));
    big.properties.exported_labels = (0..EXPORTED_LABELS_MAX)
        .map(|i| (longest_key(i), "v".repeat(LABEL_VALUE_BYTES_MAX)))
        .collect();
    let per_annotation = ANNOTATIONS_BYTES_MAX / EXPORTED_ANNOTATIONS_MAX;
    big.properties.exported_annotations = (0..EXPORTED_ANNOTATIONS_MAX)
        .map(|i| {
            let key = format!("example.com/a{i:02}");
            let value = "v".repeat(per_annotation - key.len());
            (key, value)
        })
        .collect();
    assert_eq!(big.validate(), Ok(()));
    let bytes = encode_limited::<_, RECORD_BYTES_MAX>(&big).expect("a maximal record fits");
    assert!(
        bytes.len() > RECORD_BYTES_MAX / 2,
        "the bounds are not trivially small"
    );
    assert!(a.sign(big).is_ok());
}

#[test]
fn what_encodes_within_a_limit_decodes_within_it() {
    // bincode's decode limit counts reserved memory, not bytes: the decode budget must
    // cover everything the encoder lets through.
    let largest_swim = Message::Swim(vec![0; DATAGRAM_BYTES_MAX - 4]);
    let bytes = largest_swim.encode().expect("fits a datagram");
    assert_eq!(bytes.len(), DATAGRAM_BYTES_MAX);
    assert_eq!(Message::decode_datagram(&bytes), Ok(largest_swim));

    let a = key("cluster-a", 1);
    let mut records = Vec::new();
    let mut push = Message::Push {
        records: vec![],
        relay: true,
    };
    for version in 1.. {
        let mut r = record("cluster-a", version);
        r.endpoints = (0..ENDPOINTS_PER_RECORD_MAX)
            .map(|i| Endpoint {
                addresses: vec![IpAddress::V4((i as u32).to_be_bytes())],
                conditions: EndpointConditions {
                    ready: true,
                    serving: true,
                    terminating: false,
                },
                zone: None,
                hostname: None,
            })
            .collect();
        records.push(a.sign(r).expect("signs").into_inner());
        let candidate = Message::Push {
            records: records.clone(),
            relay: true,
        };
        if candidate.encode().is_err() {
            break;
        }
        push = candidate;
    }
    let bytes = push.encode().expect("the last push that fit");
    assert!(
        bytes.len() > FRAME_BYTES_MAX - 20_000,
        "{} bytes",
        bytes.len()
    );
    assert_eq!(Message::decode_frame(&bytes), Ok(push));
}

#[test]
fn swim_is_refused_on_a_stream() {
    let bytes = encode_limited::<_, FRAME_BYTES_MAX>(&Message::Swim(vec![1; 5_000])).unwrap();
    assert!(matches!(
        Message::decode_frame(&bytes),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn codec_limits_are_what_the_design_says() {
    // A change here changes what peers accept.
    assert_eq!(codec::FRAME_BYTES_MAX, 1 << 20);
    assert_eq!(codec::DATAGRAM_BYTES_MAX, 1_200);
    assert_eq!(codec::RECORD_BYTES_MAX, 256 * 1024);
    assert_eq!(RECORDS_PER_MESSAGE_MAX, 256);
}

#[test]
fn the_largest_parts_senders_split_by_fit_one_frame_at_their_counts() {
    use shoal_proto::wire::{
        MEMBERS_PER_FRAME, ORIGIN_WANT_BYTES_BASE, RECORD_REF_BYTES_MAX, SWIM_IDENTITY_BYTES_MAX,
    };
    let longest = |c: char| c.to_string().repeat(63);
    let reference = RecordRef {
        service: ServiceKey::new(&longest('n'), &longest('s')).expect("63-byte labels"),
        version: u64::MAX,
    };
    let want = OriginWant {
        origin: cluster(&longest('o')),
        have: vec![reference.clone(); REFS_PER_ORIGIN_MAX],
    };
    assert_eq!(
        encode_limited::<_, FRAME_BYTES_MAX>(&reference).map(|b| b.len()),
        Ok(RECORD_REF_BYTES_MAX)
    );
    let pull = Message::Pull { wants: vec![want] };
    let bytes = pull.encode().expect("one origin's whole list fits a frame");
    assert!(bytes.len() <= 8 + ORIGIN_WANT_BYTES_BASE + REFS_PER_ORIGIN_MAX * RECORD_REF_BYTES_MAX);

    let identity = SwimIdentity {
        member: MemberId {
            cluster: cluster(&longest('c')),
            replica: ReplicaId(u16::MAX),
        },
        addr: NetAddr {
            ip: [0xfd; 16],
            port: u16::MAX,
        },
        generation: u32::MAX,
    };
    assert_eq!(
        encode_limited::<_, FRAME_BYTES_MAX>(&identity).map(|b| b.len()),
        Ok(SWIM_IDENTITY_BYTES_MAX)
    );
    let members = Message::Members {
        members: vec![identity; MEMBERS_PER_FRAME],
        reply: true,
    };
    members
        .encode()
        .expect("a full list of the largest members fits a frame");
}
