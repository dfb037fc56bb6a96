//! Any bytes into the record decoder, then into signature verification against a fixed
//! key ring: never a panic, and nothing the fuzzer builds verifies unless it is a
//! record that the ring's own keys signed.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shoal_proto::codec::{RECORD_DECODE_BUDGET, RECORD_BYTES_MAX, decode_limited};
use shoal_proto::{ClusterId, ClusterKey, KeyRing, SignedRecord, sign};

/// Two members with fixed keys, so that runs are reproducible. `cluster-a`'s seed is the
/// one `proto/tests/golden.rs` signs with, so its golden record is a verifying seed.
fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let mut ring = KeyRing::new();
        for (name, seed) in [("cluster-a", 7u8), ("cluster-b", 2u8)] {
            let cluster = ClusterId::new(name).expect("a valid cluster id");
            let key = ClusterKey::from_seed(cluster.clone(), [seed; 32]);
            ring.insert(cluster, key.public()).expect("a strong key");
        }
        ring
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(signed) = decode_limited::<SignedRecord, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(data) else {
        return;
    };
    if let Ok(verified) = sign::verify(ring(), signed) {
        // Only reachable with a genuine signature (for example from a seeded corpus):
        // then the record is within its bounds.
        assert_eq!(verified.record.validate(), Ok(()));
    }
});
