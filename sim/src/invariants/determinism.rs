//! Invariant 7, determinism: the same seed gives the same trace, bit for bit.
//!
//! The world folds every processed event (its time, kind, node and payload bytes) into
//! a [`TraceHash`]. Two runs of one spec must end with equal hashes
//! ([`check_same_trace`]); `sweep` and the tests re-run a seed to prove it.

/// A 64-bit running hash of the trace. Not cryptographic; stable across platforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        Self(0x243f_6a88_85a3_08d3)
    }
}

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl TraceHash {
    pub fn add(&mut self, word: u64) {
        self.0 = mix(self.0.rotate_left(23) ^ word.wrapping_mul(MUL));
    }

    /// One processed event.
    pub fn event(&mut self, at_us: u64, kind: u8, node: u32, payload: u64) {
        self.add(at_us);
        self.add(u64::from(kind) << 32 | u64::from(node));
        self.add(payload);
    }

    pub fn value(&self) -> u64 {
        self.0
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// A hash of a byte string, eight bytes at a time.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = TraceHash::default();
    h.add(bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        h.add(u64::from_le_bytes(chunk.try_into().expect("chunks of 8")));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h.add(u64::from_le_bytes(tail));
    h.value()
}

/// Two runs of one spec must have the same trace hash.
pub fn check_same_trace(first: &str, second: &str) -> Result<(), String> {
    if first == second {
        return Ok(());
    }
    Err(format!(
        "the same seed gave two traces: {first} then {second}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_content_change_the_hash() {
        let mut a = TraceHash::default();
        a.event(1, 0, 0, hash_bytes(b"x"));
        a.event(2, 0, 0, hash_bytes(b"y"));
        let mut b = TraceHash::default();
        b.event(2, 0, 0, hash_bytes(b"y"));
        b.event(1, 0, 0, hash_bytes(b"x"));
        assert_ne!(a, b);
        assert_ne!(hash_bytes(b"abcdefgh1"), hash_bytes(b"abcdefgh2"));
        assert!(check_same_trace(&a.hex(), &a.hex()).is_ok());
        assert!(check_same_trace(&a.hex(), &b.hex()).is_err());
    }
}
