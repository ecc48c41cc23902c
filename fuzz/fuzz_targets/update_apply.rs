//! Screen updates from a (possibly hostile) device: applied or refused with
//! an error, never a panic or an out-of-bounds write.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoulder_proto::Message;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::frame::decode_payload;
use shoulder_proto::{ScreenInfo, WireFormat};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let info = ScreenInfo {
        width: u16::from(data[0] % 64) + 1,
        height: u16::from(data[1] % 64) + 1,
        format: WireFormat::Xrgb8888,
        generation: 0,
    };
    let mut fb = Framebuffer::new(&info).expect("small sizes are valid");
    if let Ok(Message::Update(part)) = decode_payload(&data[2..]) {
        let _ = fb.apply(&part);
    }
});
