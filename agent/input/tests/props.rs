//! Properties of the injection core over random expert input: whatever the
//! expert sends, every write ends with SYN_REPORT, positions stay on the
//! screen, the kernel is never told about a key it already has in that
//! state, and after a release nothing is down.

use proptest::prelude::*;
use shoulder_input::codes::*;
use shoulder_input::{InjectMode, InputSink, RecordingSink, VirtualDevice};
use shoulder_proto::msg::{Buttons, Key, Pointer, Touch, TouchPhase};
use shoulder_proto::session::InjectEvent;
use shoulder_proto::testing::granted_control;

fn event() -> impl Strategy<Value = InjectEvent> {
    let code = prop_oneof![0u16..80, Just(0x110u16), Just(0x14a), any::<u16>()];
    let phase = prop_oneof![
        Just(TouchPhase::Down),
        Just(TouchPhase::Move),
        Just(TouchPhase::Up)
    ];
    prop_oneof![
        (code, any::<bool>()).prop_map(|(code, down)| InjectEvent::Key(Key { code, down })),
        (0u16..2000, 0u16..2000, 0u8..16, -3i8..3, -3i8..3).prop_map(|(x, y, b, w, h)| {
            InjectEvent::Pointer(Pointer {
                x,
                y,
                buttons: Buttons(b),
                wheel: w,
                hwheel: h,
            })
        }),
        (0u8..12, phase, 0u16..2000, 0u16..2000)
            .prop_map(|(slot, phase, x, y)| InjectEvent::Touch(Touch { slot, phase, x, y })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_expert_input_keeps_the_invariants(
        touch in any::<bool>(),
        events in proptest::collection::vec(event(), 0..60),
    ) {
        let mode = if touch { InjectMode::Touch } else { InjectMode::Pointer };
        let (_pair, token) = granted_control();
        let mut s = RecordingSink::recording(&token, mode, 640, 480).unwrap();
        let log = s.backend().log();
        let n = events.len();
        for ev in events {
            s.inject(&token, ev).unwrap();
        }
        let batches = log.batches();
        for b in &batches {
            prop_assert_eq!(b.events.last().copied(), Some(shoulder_input::RawEvent::SYN));
            for e in &b.events {
                if e.kind == EV_ABS && matches!(e.code, ABS_X | ABS_MT_POSITION_X) {
                    prop_assert!((0..640).contains(&e.value), "{:?}", e);
                }
                if e.kind == EV_ABS && matches!(e.code, ABS_Y | ABS_MT_POSITION_Y) {
                    prop_assert!((0..480).contains(&e.value), "{:?}", e);
                }
            }
        }
        // Key state changes only: never a second down or an up without down.
        for dev in [VirtualDevice::Pointer, VirtualDevice::Keyboard, VirtualDevice::Touch] {
            let mut down = std::collections::HashSet::new();
            for e in log.events(dev).into_iter().filter(|e| e.kind == EV_KEY) {
                if e.value == 1 {
                    prop_assert!(down.insert(e.code), "second down of {}", e.code);
                } else {
                    prop_assert!(down.remove(&e.code), "up of {} never down", e.code);
                }
            }
        }
        let st = s.stats();
        prop_assert_eq!(
            (st.injected + st.dropped_unknown + st.dropped_impossible) as usize,
            n,
            "every event is forwarded or dropped and counted"
        );
        prop_assert!(batches.len() >= st.injected as usize);
        s.release_all().unwrap();
        prop_assert!(!log.anything_down(), "{:?}", log.entries());
        prop_assert!(!s.is_holding());
    }
}
