//! Any bytes into `Message::decode_datagram`: never a panic, and whatever decodes is a
//! SWIM packet that re-encodes canonically into a datagram and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::codec::DATAGRAM_BYTES_MAX;
use shoal_proto::{Channel, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode_datagram(data) else {
        return;
    };
    assert_eq!(message.channel(), Channel::Datagram);
    // Canonical bytes are never longer than the bytes they were decoded from.
    let again = message.encode().expect("a decoded datagram re-encodes");
    assert!(again.len() <= data.len().min(DATAGRAM_BYTES_MAX));
    assert_eq!(Message::decode_datagram(&again), Ok(message));
});
