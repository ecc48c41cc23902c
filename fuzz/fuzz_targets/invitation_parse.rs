//! Invitation text and files from users: parsed or refused, never a panic;
//! whatever parses round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoulder_proto::invite::Invitation;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(inv) = Invitation::from_file(s) {
        assert_eq!(Invitation::from_text(&inv.to_text()), Ok(inv.clone()));
    }
    let _ = Invitation::from_text(s);
});
