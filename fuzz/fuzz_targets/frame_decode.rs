//! Bytes from the network in any chunking: the decoder yields messages or
//! typed errors, never panics, and what it decodes re-encodes to the same
//! message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoulder_proto::frame::{FrameDecoder, MAX_PRE_AUTH_FRAME_LEN, decode_payload, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut dec = FrameDecoder::new(if split & 1 == 0 {
        MAX_PRE_AUTH_FRAME_LEN
    } else {
        usize::MAX
    });
    let chunk = usize::from(split >> 1).max(1);
    for c in rest.chunks(chunk) {
        if dec.push(c).is_err() {
            return;
        }
        loop {
            match dec.next_message() {
                Ok(Some(m)) => {
                    let again = encode(&m).expect("decoded messages re-encode");
                    assert_eq!(decode_payload(&again[4..]).as_ref(), Ok(&m));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish();
});
