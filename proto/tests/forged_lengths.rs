//! Forged length prefixes: a peer claims a huge vector or string inside a small input.
//!
//! Every decoder must refuse such input quickly and without allocating what the peer
//! claims. To prove the second part, this test binary installs a counting global
//! allocator and measures the peak growth of live heap bytes during each decode.
//!
//! The allocator is `peak_alloc` (a shim over `System` keeping two atomic counters)
//! rather than our own: a `GlobalAlloc` needs an `unsafe impl`, and the workspace
//! *forbids* unsafe code, which `#![allow(unsafe_code)]` cannot override.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use peak_alloc::PeakAlloc;
use shoal_proto::codec::{
    DATAGRAM_BYTES_MAX, FRAME_BYTES_MAX, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET, decode_limited,
};
use shoal_proto::{ClusterId, DecodeError, Message, OriginWant, SignedRecord};

// ---------------------------------------------------------------------------------------
// The counting allocator

/// Counts live heap bytes, process-wide, and their peak since the last reset.
#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// The counters are process-wide, so the tests of this binary take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// Heap growth allowed while decoding one forged input.
const PEAK_GROWTH_BYTES_MAX: usize = 4 << 20;
/// Wall-clock time allowed for one forged input. Generous: the point is to catch work
/// proportional to the claimed length (2^40 iterations), not to benchmark.
const DECODE_TIME_MAX: Duration = Duration::from_secs(1);

struct Measured<R> {
    result: R,
    peak_growth_bytes: usize,
    elapsed: Duration,
}

/// Runs `f` and reports the peak growth of live heap bytes above the level at its start.
// Reading the clock is fine in a test; the ban protects the deterministic core.
#[allow(clippy::disallowed_methods)]
fn measure<R>(f: impl FnOnce() -> R) -> Measured<R> {
    let start = std::time::Instant::now();
    ALLOCATOR.reset_peak_usage();
    let base = ALLOCATOR.current_usage();
    let result = f();
    let peak = ALLOCATOR.peak_usage();
    Measured {
        result,
        peak_growth_bytes: peak.saturating_sub(base),
        elapsed: start.elapsed(),
    }
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn assert_refused_cheaply<T: std::fmt::Debug>(
    what: &str,
    bytes: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, DecodeError>,
) -> Measured<Result<T, DecodeError>> {
    let measured = measure(|| decode(bytes));
    assert!(
        measured.result.is_err(),
        "{what}: forged input accepted: {:?}",
        measured.result
    );
    assert!(
        measured.peak_growth_bytes < PEAK_GROWTH_BYTES_MAX,
        "{what}: decoding allocated {} bytes",
        measured.peak_growth_bytes
    );
    assert!(
        measured.elapsed < DECODE_TIME_MAX,
        "{what}: decoding took {:?}",
        measured.elapsed
    );
    measured
}

// ---------------------------------------------------------------------------------------
// Handcrafted bytes (bincode 2, standard config: varint integers, u32 enum tags)

const SWIM: u8 = 0;
const PUSH: u8 = 1;
const DIGEST_ORIGINS: u8 = 3;
const PULL: u8 = 4;

/// bincode's varint: one byte below 251, else a marker and 2, 4 or 8 little-endian bytes.
fn varint(n: u64) -> Vec<u8> {
    if n < 251 {
        vec![n as u8]
    } else if let Ok(n) = u16::try_from(n) {
        [&[0xfb][..], &n.to_le_bytes()].concat()
    } else if let Ok(n) = u32::try_from(n) {
        [&[0xfc][..], &n.to_le_bytes()].concat()
    } else {
        [&[0xfd][..], &n.to_le_bytes()].concat()
    }
}

fn string(text: &str) -> Vec<u8> {
    [varint(text.len() as u64), text.as_bytes().to_vec()].concat()
}

/// The fields of a record up to (not including) its ports.
fn record_head() -> Vec<u8> {
    [
        string("a"), // origin
        string("n"), // namespace
        string("s"), // name
        varint(5),   // version
        varint(0),   // export_created_ms
        varint(0),   // published_ms
        vec![0],     // ServiceType::ClusterSetIp
    ]
    .concat()
}

/// The fields of a record with no ports, no endpoints and a flat network, up to (not
/// including) its properties.
fn properties_head() -> Vec<u8> {
    [record_head(), varint(0), varint(0), vec![0]].concat()
}

/// The properties up to (not including) the exported labels: no IP families, no
/// affinity, no timeout, no traffic policy, no traffic distribution.
fn labels_head() -> Vec<u8> {
    [properties_head(), varint(0), vec![0, 0, 0, 0]].concat()
}

/// Pads with zeros to `len` bytes, the size of a real packet.
fn padded(mut bytes: Vec<u8>, len: usize) -> Vec<u8> {
    assert!(bytes.len() <= len, "the forged prefix fits");
    bytes.resize(len, 0);
    bytes
}

const PACKET: usize = 1_400;

fn frame(bytes: &[u8]) -> Result<Message, DecodeError> {
    Message::decode_frame(bytes)
}

fn any_channel(bytes: &[u8]) -> Result<Message, DecodeError> {
    Message::decode(bytes)
}

fn datagram(bytes: &[u8]) -> Result<Message, DecodeError> {
    Message::decode_datagram(bytes)
}

fn record(bytes: &[u8]) -> Result<SignedRecord, DecodeError> {
    decode_limited::<SignedRecord, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(bytes)
}

// ---------------------------------------------------------------------------------------

#[test]
fn the_allocator_counts() {
    // Without this, a broken counter would make every bound below pass vacuously.
    // The counters are process-wide: the harness may free a few bytes on another thread
    // during the measurement, hence the slack.
    const SLACK_BYTES: usize = 256 << 10;
    let _turn = serial();
    let measured = measure(|| vec![1u8; 8 << 20]);
    assert!(
        measured.peak_growth_bytes >= (8 << 20) - SLACK_BYTES,
        "8 MiB counted as {}",
        measured.peak_growth_bytes
    );
    assert_eq!(measured.result.len(), 8 << 20);
    let zeroed = measure(|| vec![0u64; 1 << 20]);
    assert!(
        zeroed.peak_growth_bytes >= (8 << 20) - SLACK_BYTES,
        "8 MiB of zeroes counted as {}",
        zeroed.peak_growth_bytes
    );
    drop((measured, zeroed));
}

#[test]
fn a_push_claiming_2_pow_40_records_is_refused() {
    let _turn = serial();
    let bytes = padded([vec![PUSH], varint(1 << 40)].concat(), PACKET);
    for decode in [frame, any_channel] {
        let refused = assert_refused_cheaply("2^40 records", &bytes, decode);
        assert!(matches!(refused.result, Err(DecodeError::Malformed(_))));
    }
    // As a datagram it is refused too, by size or by kind.
    let small = padded([vec![PUSH], varint(1 << 40)].concat(), DATAGRAM_BYTES_MAX);
    assert_refused_cheaply("2^40 records, datagram", &small, datagram);
}

#[test]
fn a_push_claiming_u64_max_records_is_refused() {
    // len × size_of::<SignedRecord>() overflows: that must be an error, not a wrap.
    let _turn = serial();
    let bytes = padded([vec![PUSH], varint(u64::MAX)].concat(), PACKET);
    assert_refused_cheaply("u64::MAX records", &bytes, frame);
}

#[test]
fn a_swim_packet_claiming_2_pow_32_bytes_is_refused() {
    let _turn = serial();
    let bytes = padded([vec![SWIM], varint(1 << 32)].concat(), DATAGRAM_BYTES_MAX);
    for decode in [datagram, frame, any_channel] {
        assert_refused_cheaply("2^32 swim bytes", &bytes, decode);
    }
}

#[test]
fn a_claim_just_under_the_frame_limit_allocates_at_most_the_limit() {
    // The decode budget admits this claim, so bincode does allocate it before finding
    // the input short: what bounds the allocation is the budget, not the input length.
    let _turn = serial();
    let claimed = FRAME_BYTES_MAX as u64 - 64;
    let bytes = padded([vec![SWIM], varint(claimed)].concat(), PACKET);
    let refused = assert_refused_cheaply("a 1 MiB swim claim", &bytes, frame);
    assert!(refused.peak_growth_bytes <= FRAME_BYTES_MAX + (64 << 10));

    // A claim far over any sane budget is refused before anything is allocated.
    let over = padded(
        [vec![SWIM], varint(64 * FRAME_BYTES_MAX as u64)].concat(),
        PACKET,
    );
    let refused = assert_refused_cheaply("a 64 MiB swim claim", &over, frame);
    assert!(
        refused.peak_growth_bytes < 64 << 10,
        "a claim over the budget is refused before allocating: {} bytes",
        refused.peak_growth_bytes
    );
}

#[test]
fn a_string_claiming_2_pow_32_bytes_is_refused() {
    let _turn = serial();
    let origin = padded([vec![PUSH], varint(1), varint(1 << 32)].concat(), PACKET);
    assert_refused_cheaply("origin of 2^32 bytes", &origin, frame);

    let zone = [
        vec![PUSH],
        varint(1),
        record_head(),
        varint(0), // no ports
        varint(1), // one endpoint
        varint(1), // one address
        vec![0, 10, 0, 0, 1],
        vec![1, 1, 0], // conditions
        vec![1],       // zone: Some
        varint(1 << 32),
    ]
    .concat();
    assert_refused_cheaply("zone of 2^32 bytes", &padded(zone, PACKET), frame);

    let port_name = [
        vec![PUSH],
        varint(1),
        record_head(),
        varint(1), // one port
        varint(u64::from(u32::MAX)),
    ]
    .concat();
    assert_refused_cheaply("port name of 2^32 bytes", &padded(port_name, PACKET), frame);

    let push_of = |record: Vec<u8>| padded([vec![PUSH], varint(1), record].concat(), PACKET);
    let strings: Vec<(&str, Vec<u8>)> = vec![
        (
            "traffic distribution of 2^32 bytes",
            [
                properties_head(),
                varint(0),
                vec![0, 0, 0, 1],
                varint(1 << 32),
            ]
            .concat(),
        ),
        (
            "label key of 2^32 bytes",
            [labels_head(), varint(1), varint(1 << 32)].concat(),
        ),
        (
            "label value of 2^40 bytes",
            [labels_head(), varint(1), string("app"), varint(1 << 40)].concat(),
        ),
        (
            "annotation value of 2^32 bytes",
            [
                labels_head(),
                varint(0),
                varint(1),
                string("note"),
                varint(1 << 32),
            ]
            .concat(),
        ),
    ];
    for (what, record) in strings {
        assert_refused_cheaply(what, &push_of(record), frame);
    }
}

#[test]
fn nested_vectors_claiming_2_pow_40_elements_are_refused() {
    let _turn = serial();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ports",
            [vec![PUSH], varint(1), record_head(), varint(1 << 40)].concat(),
        ),
        (
            "endpoints",
            [
                vec![PUSH],
                varint(1),
                record_head(),
                varint(0),
                varint(1 << 40),
            ]
            .concat(),
        ),
        (
            "addresses",
            [
                vec![PUSH],
                varint(1),
                record_head(),
                varint(0),
                varint(1),
                varint(1 << 40),
            ]
            .concat(),
        ),
        (
            "ip families",
            [vec![PUSH], varint(1), properties_head(), varint(1 << 40)].concat(),
        ),
        (
            "exported labels",
            [vec![PUSH], varint(1), labels_head(), varint(1 << 40)].concat(),
        ),
        (
            "exported annotations",
            [
                vec![PUSH],
                varint(1),
                labels_head(),
                varint(0),
                varint(1 << 40),
            ]
            .concat(),
        ),
        (
            "digest origins",
            [vec![DIGEST_ORIGINS], varint(1 << 40)].concat(),
        ),
        ("pull wants", [vec![PULL], varint(1 << 40)].concat()),
        (
            "refs of one want",
            [vec![PULL], varint(1), string("a"), varint(1 << 40)].concat(),
        ),
    ];
    for (what, bytes) in cases {
        assert_refused_cheaply(what, &padded(bytes, PACKET), frame);
    }
}

#[test]
fn a_nested_claim_cannot_spend_the_budget_twice() {
    // The outer vector claims as much as the budget allows; the inner one then claims
    // a million refs. bincode counts both claims against one budget, so the inner
    // claim fails and the peak stays near one budget, not two.
    let _turn = serial();
    let wants = (FRAME_BYTES_MAX / std::mem::size_of::<OriginWant>()) as u64 - 1;
    let bytes = [
        vec![PULL],
        varint(wants),
        string("a"),
        varint(1 << 20), // refs claimed by the first want
    ]
    .concat();
    let refused = assert_refused_cheaply("a nested claim", &padded(bytes, PACKET), frame);
    assert!(refused.peak_growth_bytes <= FRAME_BYTES_MAX + (64 << 10));
}

#[test]
fn forged_records_alone_are_refused() {
    let _turn = serial();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("origin of 2^32 bytes", varint(1 << 32)),
        (
            "2^40 endpoints",
            [record_head(), varint(0), varint(1 << 40)].concat(),
        ),
        (
            "a hostname of 2^40 bytes",
            [
                record_head(),
                varint(0),
                varint(1),
                varint(1),
                vec![0, 10, 0, 0, 1],
                vec![1, 1, 0],
                vec![0], // zone: None
                vec![1], // hostname: Some
                varint(1 << 40),
            ]
            .concat(),
        ),
        (
            "2^40 exported labels",
            [labels_head(), varint(1 << 40)].concat(),
        ),
        (
            "2^40 exported annotations",
            [labels_head(), varint(0), varint(1 << 40)].concat(),
        ),
    ];
    for (what, bytes) in cases {
        assert_refused_cheaply(what, &padded(bytes, PACKET), record);
    }
}

#[test]
fn a_forged_id_length_is_refused() {
    let _turn = serial();
    let bytes = padded(varint(1 << 32), PACKET);
    assert_refused_cheaply("a cluster id of 2^32 bytes", &bytes, |b| {
        decode_limited::<ClusterId, PACKET, { 16 * PACKET }>(b)
    });
}

#[test]
fn reserved_varint_markers_are_refused() {
    // 0xfe announces a u128 and 0xff is reserved; neither is a valid length.
    let _turn = serial();
    for marker in [0xfe, 0xff] {
        let bytes = padded(vec![PUSH, marker], PACKET);
        assert_refused_cheaply("a reserved length marker", &bytes, frame);
        let tag = padded(vec![marker], PACKET);
        assert_refused_cheaply("a reserved tag marker", &tag, frame);
    }
}

#[test]
fn every_truncation_of_a_valid_frame_is_refused() {
    let _turn = serial();
    let a = common::key("cluster-a", 1);
    let message = Message::Push {
        records: vec![common::signed(&a, 7), common::signed(&a, 8)],
        relay: true,
    };
    let bytes = message.encode().expect("fits");
    assert_eq!(Message::decode_frame(&bytes), Ok(message));
    for len in 0..bytes.len() {
        assert_refused_cheaply("a truncated frame", &bytes[..len], frame);
    }
}

#[test]
fn the_handcrafted_layout_is_a_record() {
    // The forged inputs above replace one length in this layout: were it wrong, they
    // would be refused for another reason and prove nothing.
    let _turn = serial();
    let bytes = [
        labels_head(),
        varint(1),
        string("app"),
        string("web"),
        varint(1),
        string("note"),
        string("text"),
        vec![2], // Affinity::Remote
        vec![0], // not a tombstone
    ]
    .concat();
    let record =
        decode_limited::<shoal_proto::ExportRecord, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(&bytes)
            .expect("the handcrafted record decodes");
    assert_eq!(record.version, 5);
    assert!(record.ports.is_empty() && record.endpoints.is_empty());
    assert_eq!(record.properties.exported_labels["app"], "web");
    assert_eq!(record.properties.exported_annotations["note"], "text");
    assert_eq!(record.properties.traffic_distribution, None);
    assert_eq!(record.properties.affinity, shoal_proto::Affinity::Remote);
    let distribution = [
        properties_head(),
        varint(0),
        vec![0, 0, 0, 1],
        string("PreferClose"),
        varint(0),
        varint(0),
        vec![0], // Affinity::None
        vec![0],
    ]
    .concat();
    let record =
        decode_limited::<shoal_proto::ExportRecord, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(
            &distribution,
        )
        .expect("decodes");
    assert_eq!(
        record.properties.traffic_distribution.as_deref(),
        Some("PreferClose")
    );
    let endpoint = [
        record_head(),
        varint(1), // one port
        string("http"),
        vec![0], // TCP
        varint(80),
        varint(8080),
        vec![0],   // no app protocol
        varint(1), // one endpoint
        varint(1), // one address
        vec![0, 10, 0, 0, 1],
        vec![1, 1, 0], // conditions
        vec![1],       // zone: Some
        string("zone-a"),
        vec![0], // hostname: None
        vec![0], // flat
        varint(0),
        vec![0, 0, 0, 0],
        varint(0),
        varint(0),
        vec![0], // Affinity::None
        vec![0],
    ]
    .concat();
    let record =
        decode_limited::<shoal_proto::ExportRecord, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(
            &endpoint,
        )
        .expect("decodes");
    assert_eq!(record.ports[0].target_port, 8080);
    assert_eq!(record.endpoints[0].zone.as_deref(), Some("zone-a"));
}
