//! Golden bytes: the canonical wire format, pinned.
//!
//! **Changing any constant in this file is a wire-format change.** Nodes of different
//! versions would stop understanding each other, and every stored signature would stop
//! verifying. Do it only on purpose, with a new domain tag or message version, and say
//! so in the commit message. If a test here fails after an innocent-looking change (a
//! field reordered, a type widened, an enum variant inserted), revert that change.

mod common;

use common::{cluster, from_hex, key, ring, service, to_hex};
use shoal_proto::codec::{RECORD_BYTES_MAX, RECORD_DECODE_BUDGET, decode_limited, encode_limited};
use shoal_proto::sign;
use shoal_proto::{
    Affinity, ClusterKey, Endpoint, EndpointConditions, ExportRecord, InternalTrafficPolicy,
    IpAddress, IpFamily, Message, NetworkMode, PortProtocol, ServicePort, ServiceProperties,
    ServiceType, SessionAffinity, SignedRecord,
};

/// The public key for the seed `[7u8; 32]` (RFC 8032 key derivation).
const PUBLIC_KEY_HEX: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
/// The signature over `golden_record()` with that key. Cross-checked once with an
/// independent ed25519 implementation (OpenSSL, through Python's `cryptography`):
/// Ed25519(seed, b"shoal/export-record/v5\0" || canonical record bytes).
const SIGNATURE_HEX: &str = concat!(
    "4e6f9cfee06fd7916cb5201156149eb20dd8942b0fec937cda9e10dadb5b9ff1",
    "39f3c769147ebc2e758dd7a512538b4e7a798b836559005e6306704a810ddb09",
);
/// `Message::Push { records: vec![signed golden_record()], relay: true }`.
const PUSH_HEX: &str = concat!(
    // Message::Push
    "01",
    // one record
    "01",
    // origin "cluster-a"
    "09636c75737465722d61",
    // namespace "payments"
    "087061796d656e7473",
    // name "api"
    "03617069",
    // version 300
    "fb2c01",
    // export_created_ms 1_700_000_000_123
    "fd7b68e5cf8b010000",
    // published_ms 1_700_000_000_456
    "fdc869e5cf8b010000",
    // ServiceType::Headless
    "01",
    // one port
    "01",
    // port name "grpc"
    "0467727063",
    // PortProtocol::Tcp
    "00",
    // port 9090
    "fb8223",
    // target_port 50051
    "fb83c3",
    // app_protocol Some("kubernetes.io/h2c")
    "01116b756265726e657465732e696f2f683263",
    // one endpoint
    "01",
    // two addresses
    "02",
    // V4 10.1.2.3
    "000a010203",
    // V6 fd00::a01:203
    "01fd00000000000000000000000a010203",
    // ready, serving, not terminating
    "010100",
    // zone Some("zone-a")
    "01067a6f6e652d61",
    // hostname Some("api-0")
    "01056170692d30",
    // NetworkMode::Island
    "01",
    // properties: two IP families, IPv6 then IPv4
    "02",
    "01",
    "00",
    // SessionAffinity::ClientIp
    "01",
    // client_ip_timeout_seconds Some(3600)
    "01fb100e",
    // internal_traffic_policy Some(Local)
    "0101",
    // traffic_distribution Some("PreferClose")
    "010b507265666572436c6f7365",
    // one exported label: "tier" = "backend"
    "01",
    "0474696572",
    "076261636b656e64",
    // one exported annotation: "example.com/owner" = "payments"
    "01",
    "116578616d706c652e636f6d2f6f776e6572",
    "087061796d656e7473",
    // Affinity::Nearest
    "03",
    // not a tombstone
    "00",
    // the signature: 64 bytes, no length prefix
    "4e6f9cfee06fd7916cb5201156149eb20dd8942b0fec937cda9e10dadb5b9ff1",
    "39f3c769147ebc2e758dd7a512538b4e7a798b836559005e6306704a810ddb09",
    // relay: true
    "01",
);
/// `SignedRecord::digest_hash` of the signed golden record: anti-entropy compares these
/// across nodes, so the hash function is part of the protocol too.
const DIGEST_HASH: u64 = 0x182b_3ac2_d0e6_0dd0;
/// `Message::DigestRoot { root: 0x0123_4567_89ab_cdef, records: 300, members: 7 }`.
const DIGEST_ROOT_HEX: &str = concat!(
    "02",                 // Message::DigestRoot
    "fdefcdab8967452301", // root, a varint u64
    "fb2c01",             // records 300
    "07",                 // members hash 7
);
/// `Message::Swim(b"shoal-swim".to_vec())`.
const SWIM_HEX: &str = concat!(
    "00",                   // Message::Swim
    "0a",                   // ten bytes
    "73686f616c2d7377696d", // "shoal-swim"
);

fn golden_key() -> ClusterKey {
    ClusterKey::from_seed(cluster("cluster-a"), [7u8; 32])
}

fn golden_record() -> ExportRecord {
    ExportRecord {
        origin: cluster("cluster-a"),
        service: service("payments", "api"),
        version: 300,
        export_created_ms: 1_700_000_000_123,
        published_ms: 1_700_000_000_456,
        service_type: ServiceType::Headless,
        ports: vec![ServicePort {
            name: "grpc".to_owned(),
            protocol: PortProtocol::Tcp,
            port: 9090,
            target_port: 50051,
            app_protocol: Some("kubernetes.io/h2c".to_owned()),
        }],
        endpoints: vec![Endpoint {
            addresses: vec![
                IpAddress::V4([10, 1, 2, 3]),
                IpAddress::V6([
                    0xfd, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x01, 0x02, 0x03,
                ]),
            ],
            conditions: EndpointConditions {
                ready: true,
                serving: true,
                terminating: false,
            },
            zone: Some("zone-a".to_owned()),
            hostname: Some("api-0".to_owned()),
        }],
        network: NetworkMode::Island,
        properties: ServiceProperties {
            ip_families: vec![IpFamily::Ipv6, IpFamily::Ipv4],
            session_affinity: SessionAffinity::ClientIp,
            client_ip_timeout_seconds: Some(3_600),
            internal_traffic_policy: Some(InternalTrafficPolicy::Local),
            traffic_distribution: Some("PreferClose".to_owned()),
            exported_labels: [("tier".to_owned(), "backend".to_owned())].into(),
            exported_annotations: [("example.com/owner".to_owned(), "payments".to_owned())].into(),
            affinity: Affinity::Nearest,
        },
        tombstone: false,
    }
}

fn golden_signed() -> SignedRecord {
    golden_key()
        .sign(golden_record())
        .expect("the golden record is valid")
        .into_inner()
}

fn golden_push() -> Message {
    Message::Push {
        records: vec![golden_signed()],
        relay: true,
    }
}

/// Compares, printing the actual hex so that a deliberate format change can be pasted.
fn assert_hex(what: &str, actual: &[u8], expected_hex: &str) {
    let actual_hex = to_hex(actual);
    assert!(
        actual_hex == expected_hex,
        "{what} changed: this is a wire-format change.\n  expected {expected_hex}\n  actual   {actual_hex}"
    );
}

#[test]
fn the_public_key_is_pinned() {
    assert_hex("public key", &golden_key().public(), PUBLIC_KEY_HEX);
}

#[test]
fn the_signature_is_pinned() {
    assert_hex("signature", &golden_signed().signature, SIGNATURE_HEX);
}

#[test]
fn the_push_encoding_is_pinned() {
    let bytes = golden_push().encode().expect("fits a frame");
    assert_hex("push frame", &bytes, PUSH_HEX);
}

#[test]
fn the_pinned_push_decodes_and_verifies() {
    let bytes = from_hex(PUSH_HEX);
    let message = Message::decode_frame(&bytes).expect("golden bytes decode");
    assert_eq!(message, golden_push());
    let Message::Push { records, relay } = message else {
        panic!("golden bytes are a push");
    };
    assert!(relay);
    let ring = ring(&[&golden_key()]);
    for record in records {
        let verified = sign::verify(&ring, record).expect("golden signature verifies");
        assert_eq!(verified.record, golden_record());
    }
}

#[test]
fn the_pinned_signature_verifies_with_the_pinned_key_alone() {
    // Rebuild the ring from the pinned public key rather than from the seed.
    let public: [u8; 32] = from_hex(PUBLIC_KEY_HEX).try_into().expect("32 bytes");
    let signature: [u8; 64] = from_hex(SIGNATURE_HEX).try_into().expect("64 bytes");
    let mut ring = shoal_proto::KeyRing::new();
    ring.insert(cluster("cluster-a"), public)
        .expect("a strong key");
    let signed = SignedRecord {
        record: golden_record(),
        signature,
    };
    assert!(sign::verify(&ring, signed).is_ok());
}

#[test]
fn the_signed_message_is_the_domain_tag_then_the_record() {
    // Verify with ed25519-dalek directly, bypassing shoal_proto::sign, so that the
    // domain tag and the exact signed bytes are pinned and not just self-consistent.
    let record = encode_limited::<_, RECORD_BYTES_MAX>(&golden_record()).expect("fits");
    let mut message = b"shoal/export-record/v5\0".to_vec();
    message.extend_from_slice(&record);
    let public: [u8; 32] = from_hex(PUBLIC_KEY_HEX).try_into().expect("32 bytes");
    let signature: [u8; 64] = from_hex(SIGNATURE_HEX).try_into().expect("64 bytes");
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("a valid point");
    let signature = ed25519_dalek::Signature::from_bytes(&signature);
    assert!(key.verify_strict(&message, &signature).is_ok());
    // Without the tag, the same signature must not verify.
    assert!(key.verify_strict(&record, &signature).is_err());
}

#[test]
fn the_digest_hash_is_pinned() {
    let hash = golden_signed().digest_hash();
    assert!(
        hash == DIGEST_HASH,
        "digest hash changed: this is a protocol change.\n  expected {DIGEST_HASH:#018x}\n  actual   {hash:#018x}"
    );
}

#[test]
fn the_digest_root_encoding_is_pinned() {
    let message = Message::DigestRoot {
        root: 0x0123_4567_89ab_cdef,
        records: 300,
        members: 7,
    };
    let bytes = message.encode().expect("fits");
    assert_hex("digest root", &bytes, DIGEST_ROOT_HEX);
    assert_eq!(
        Message::decode_frame(&from_hex(DIGEST_ROOT_HEX)),
        Ok(message)
    );
}

#[test]
fn the_swim_encoding_is_pinned() {
    let message = Message::Swim(b"shoal-swim".to_vec());
    let bytes = message.encode().expect("fits");
    assert_hex("swim datagram", &bytes, SWIM_HEX);
    assert_eq!(Message::decode_datagram(&from_hex(SWIM_HEX)), Ok(message));
}

#[test]
fn a_signed_record_is_its_record_then_the_raw_signature() {
    // No length prefix on the signature: a fixed-size array.
    let signed = golden_signed();
    let record = encode_limited::<_, RECORD_BYTES_MAX>(&signed.record).expect("fits");
    let whole = encode_limited::<_, RECORD_BYTES_MAX>(&signed).expect("fits");
    assert_eq!(whole.len(), record.len() + 64);
    assert_eq!(&whole[..record.len()], &record[..]);
    assert_eq!(&whole[record.len()..], &signed.signature[..]);
}

#[test]
fn decoding_is_lenient_but_encoding_is_canonical() {
    // bincode accepts a non-minimal varint (0xfb marks a 2-byte integer), so two byte
    // strings can decode to one record. Signatures cover the canonical re-encoding, so
    // verification is unaffected; but equivocation checks must compare decoded values
    // (or re-encoded bytes), never the bytes as received.
    let canonical = golden_push().encode().expect("fits");
    // version 300 is encoded as fb 2c 01; export_created_ms follows it.
    let version_at = find(&canonical, &[0xfb, 0x2c, 0x01]).expect("version in the frame");
    let padded = {
        let mut bytes = canonical[..version_at].to_vec();
        bytes.extend_from_slice(&[0xfc, 0x2c, 0x01, 0x00, 0x00]); // as a 4-byte integer
        bytes.extend_from_slice(&canonical[version_at + 3..]);
        bytes
    };
    let decoded = Message::decode_frame(&padded).expect("bincode accepts it");
    assert_eq!(decoded, golden_push());
    assert_eq!(decoded.encode().expect("fits"), canonical);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn the_golden_record_round_trips_alone() {
    let bytes = encode_limited::<_, RECORD_BYTES_MAX>(&golden_signed()).expect("fits");
    let decoded: SignedRecord =
        decode_limited::<_, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(&bytes).expect("decodes");
    assert_eq!(decoded, golden_signed());
    // The fixture helpers agree with the golden key derivation.
    assert_eq!(key("cluster-a", 7).public(), golden_key().public());
}
