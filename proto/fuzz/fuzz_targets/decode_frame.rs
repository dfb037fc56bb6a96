//! Any bytes into `Message::decode_frame` (and `Message::decode`): never a panic, and
//! whatever decodes respects the message bounds, re-encodes canonically within the
//! frame limit and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::Message;
use shoal_proto::codec::{FRAME_BYTES_MAX, encode_limited};

fuzz_target!(|data: &[u8]| {
    let _ = Message::decode(data);
    let Ok(message) = Message::decode_frame(data) else {
        return;
    };
    assert_eq!(message.check_bounds(), Ok(()));
    // Not `Message::encode`: it applies the datagram limit to `Swim`, which a frame may
    // carry at any size up to the frame limit.
    let again = encode_limited::<_, FRAME_BYTES_MAX>(&message).expect("re-encodes");
    assert!(again.len() <= data.len());
    assert_eq!(Message::decode_frame(&again), Ok(message));
});
