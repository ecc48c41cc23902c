use std::path::PathBuf;

use super::*;
use crate::codes::*;

const KEY_A: u16 = 30;
const KEY_S: u16 = 31;
const KEY_POWER: u16 = 116;
const BTN_TOOL_FINGER: u16 = 0x145;
const BTN_TOOL_PEN: u16 = 0x140;

fn keys(codes: &[u16]) -> KeySet {
    let mut k = KeySet::new();
    for c in codes {
        k.insert(*c);
    }
    k
}

fn range(max: i32) -> Option<AxisRange> {
    Some(AxisRange { min: 0, max })
}

fn keyboard() -> DeviceCaps {
    DeviceCaps {
        name: "AT Translated Set 2 keyboard".into(),
        keys: keys(&[KEY_A, KEY_S, 28, 57, KEY_LEFTCTRL]),
        ..DeviceCaps::default()
    }
}

fn mouse() -> DeviceCaps {
    DeviceCaps {
        name: "ImExPS/2 Generic Explorer Mouse".into(),
        keys: keys(&[BTN_LEFT, BTN_RIGHT, BTN_MIDDLE]),
        rel_x_y: true,
        ..DeviceCaps::default()
    }
}

/// As QEMU's usb-tablet presents itself.
fn tablet() -> DeviceCaps {
    DeviceCaps {
        name: "QEMU QEMU USB Tablet".into(),
        keys: keys(&[BTN_LEFT, BTN_RIGHT, BTN_MIDDLE]),
        abs_x: range(32767),
        abs_y: range(32767),
        ..DeviceCaps::default()
    }
}

fn touchscreen() -> DeviceCaps {
    DeviceCaps {
        name: "ILITEK Multi-Touch".into(),
        keys: keys(&[BTN_TOUCH]),
        abs_x: range(4095),
        abs_y: range(4095),
        mt_x: range(4095),
        mt_y: range(4095),
        direct: true,
        ..DeviceCaps::default()
    }
}

fn mt_only_touchscreen() -> DeviceCaps {
    DeviceCaps {
        name: "MT only".into(),
        mt_x: range(999),
        mt_y: range(499),
        direct: true,
        ..DeviceCaps::default()
    }
}

fn info(caps: &DeviceCaps) -> LocalDeviceInfo {
    classify(LocalDeviceId(1), PathBuf::from("/dev/input/event1"), caps).unwrap()
}

fn ctx(w: u16, h: u16) -> DecodeContext {
    DecodeContext {
        screen: ScreenSize::new(w, h).unwrap(),
        cursor: (w / 2, h / 2),
    }
}

/// Feeds `(type, code, value)` events.
fn run(d: &mut Decoder, c: &mut DecodeContext, events: &[(u16, u16, i32)]) -> Vec<LocalEventKind> {
    let mut out = Vec::new();
    for (t, code, v) in events {
        d.feed(*t, *code, *v, c, &mut out);
    }
    out
}

const SYN: (u16, u16, i32) = (EV_SYN, SYN_REPORT, 0);

#[test]
fn classification() {
    assert_eq!(info(&keyboard()).kind_label(), "keyboard");
    assert_eq!(info(&mouse()).pointer, Some(PointerKind::Mouse));
    assert_eq!(info(&mouse()).x_axis, None);
    let t = info(&tablet());
    assert_eq!(t.pointer, Some(PointerKind::Tablet));
    assert_eq!(t.x_axis, range(32767));
    assert_eq!(info(&touchscreen()).pointer, Some(PointerKind::Touchscreen));
    let mt = info(&mt_only_touchscreen());
    assert_eq!(mt.pointer, Some(PointerKind::Touchscreen));
    assert_eq!(mt.y_axis, range(499));
    let touchpad = DeviceCaps {
        keys: keys(&[BTN_LEFT, BTN_TOUCH, BTN_TOOL_FINGER]),
        abs_x: range(1000),
        abs_y: range(1000),
        ..DeviceCaps::default()
    };
    assert_eq!(info(&touchpad).pointer, Some(PointerKind::Touchpad));
    let pen = DeviceCaps {
        keys: keys(&[BTN_TOUCH, BTN_TOOL_PEN]),
        abs_x: range(1000),
        abs_y: range(1000),
        ..DeviceCaps::default()
    };
    assert_eq!(info(&pen).pointer, Some(PointerKind::Tablet));
    let old_touch = DeviceCaps {
        keys: keys(&[BTN_TOUCH]),
        abs_x: range(1000),
        abs_y: range(1000),
        ..DeviceCaps::default()
    };
    assert_eq!(info(&old_touch).pointer, Some(PointerKind::Touchscreen));
}

#[test]
fn own_and_irrelevant_devices_are_skipped() {
    let power = DeviceCaps {
        name: "Power Button".into(),
        keys: keys(&[KEY_POWER]),
        ..DeviceCaps::default()
    };
    assert_eq!(classify(LocalDeviceId(0), "/x".into(), &power), None);
    for kind in [
        crate::VirtualDevice::Pointer,
        crate::VirtualDevice::Keyboard,
        crate::VirtualDevice::Touch,
    ] {
        let ours = DeviceCaps {
            name: kind.name().into(),
            ..keyboard()
        };
        assert_eq!(classify(LocalDeviceId(0), "/x".into(), &ours), None);
    }
    let ours_by_phys = DeviceCaps {
        phys: Some(crate::inject::VIRTUAL_PHYS.into()),
        ..keyboard()
    };
    assert_eq!(classify(LocalDeviceId(0), "/x".into(), &ours_by_phys), None);
}

#[test]
fn touch_only_devices_choose_touch_injection() {
    let ts = info(&touchscreen());
    let kb = info(&keyboard());
    let ms = info(&mouse());
    assert_eq!(
        choose_inject_mode(TouchChoice::Auto, &[ts.clone(), kb.clone()]),
        InjectMode::Touch
    );
    assert_eq!(
        choose_inject_mode(TouchChoice::Auto, &[ts.clone(), ms.clone()]),
        InjectMode::Pointer
    );
    assert_eq!(
        choose_inject_mode(TouchChoice::Auto, &[kb]),
        InjectMode::Pointer
    );
    assert_eq!(
        choose_inject_mode(TouchChoice::Auto, &[]),
        InjectMode::Pointer
    );
    assert_eq!(
        choose_inject_mode(TouchChoice::Always, &[ms]),
        InjectMode::Touch
    );
    assert_eq!(
        choose_inject_mode(TouchChoice::Never, &[ts]),
        InjectMode::Pointer
    );
}

#[test]
fn axis_scaling_maps_the_range_onto_the_screen() {
    let r = AxisRange { min: 0, max: 32767 };
    assert_eq!(r.scale(0, 1920), 0);
    assert_eq!(r.scale(32767, 1920), 1919);
    assert_eq!(r.scale(16384, 1920), 959);
    assert_eq!(r.scale(-5, 1920), 0);
    assert_eq!(r.scale(40000, 1920), 1919);
    let offset = AxisRange { min: 100, max: 200 };
    assert_eq!(offset.scale(150, 101), 50);
    let broken = AxisRange { min: 5, max: 5 };
    assert_eq!(broken.scale(5, 100), 0);
}

#[test]
fn keys_come_out_once_and_repeats_are_activity() {
    let caps = keyboard();
    let mut d = Decoder::new(&info(&caps), &caps);
    let mut c = ctx(800, 600);
    assert_eq!(
        run(&mut d, &mut c, &[(EV_KEY, KEY_A, 1), SYN]),
        vec![LocalEventKind::Key {
            code: KEY_A,
            down: true
        }]
    );
    assert_eq!(
        run(&mut d, &mut c, &[(EV_KEY, KEY_A, 2), SYN]),
        vec![LocalEventKind::Activity]
    );
    assert_eq!(
        run(&mut d, &mut c, &[(EV_KEY, KEY_S, 1), SYN]),
        vec![LocalEventKind::Key {
            code: KEY_S,
            down: true
        }]
    );
    let mut out = Vec::new();
    d.release_all(&c, &mut out);
    assert_eq!(
        out,
        vec![
            LocalEventKind::Key {
                code: KEY_A,
                down: false
            },
            LocalEventKind::Key {
                code: KEY_S,
                down: false
            }
        ]
    );
}

#[test]
fn mouse_moves_a_cursor_clamped_to_the_screen() {
    let caps = mouse();
    let mut d = Decoder::new(&info(&caps), &caps);
    let mut c = ctx(800, 600);
    assert_eq!(
        run(
            &mut d,
            &mut c,
            &[(EV_REL, REL_X, 10), (EV_REL, REL_Y, -5), SYN]
        ),
        vec![LocalEventKind::Motion {
            dx: 10,
            dy: -5,
            x: 410,
            y: 295
        }]
    );
    assert_eq!(
        run(
            &mut d,
            &mut c,
            &[(EV_REL, REL_X, 5000), (EV_REL, REL_Y, -5000), SYN]
        ),
        vec![LocalEventKind::Motion {
            dx: 5000,
            dy: -5000,
            x: 799,
            y: 0
        }]
    );
    assert_eq!(
        run(&mut d, &mut c, &[(EV_KEY, BTN_LEFT, 1), SYN]),
        vec![LocalEventKind::Button {
            button: PointerButton::Left,
            down: true,
            x: 799,
            y: 0
        }]
    );
    assert_eq!(
        run(&mut d, &mut c, &[(EV_REL, REL_WHEEL, -1), SYN]),
        vec![LocalEventKind::Scroll {
            vertical: -1,
            horizontal: 0
        }]
    );
    let mut out = Vec::new();
    d.release_all(&c, &mut out);
    assert_eq!(
        out,
        vec![LocalEventKind::Button {
            button: PointerButton::Left,
            down: false,
            x: 799,
            y: 0
        }]
    );
}

#[test]
fn tablet_positions_scale_to_the_screen_with_their_ranges() {
    let caps = tablet();
    let mut d = Decoder::new(&info(&caps), &caps);
    let mut c = ctx(1024, 768);
    let out = run(
        &mut d,
        &mut c,
        &[
            (EV_ABS, ABS_X, 32767),
            (EV_ABS, ABS_Y, 0),
            (EV_KEY, BTN_LEFT, 1),
            SYN,
        ],
    );
    assert_eq!(
        out,
        vec![
            LocalEventKind::Absolute {
                raw_x: 32767,
                raw_y: 0,
                x_axis: AxisRange { min: 0, max: 32767 },
                y_axis: AxisRange { min: 0, max: 32767 },
                x: 1023,
                y: 0,
                contact: true,
            },
            LocalEventKind::Button {
                button: PointerButton::Left,
                down: true,
                x: 1023,
                y: 0
            }
        ]
    );
    assert_eq!(
        c.cursor,
        (512, 384),
        "absolute devices do not move the cursor"
    );
}

#[test]
fn a_tap_on_a_touchscreen_is_a_left_click_where_it_landed() {
    let caps = touchscreen();
    let mut d = Decoder::new(&info(&caps), &caps);
    let mut c = ctx(800, 480);
    let down = run(
        &mut d,
        &mut c,
        &[
            (EV_ABS, ABS_MT_SLOT, 0),
            (EV_ABS, ABS_MT_TRACKING_ID, 5),
            (EV_ABS, ABS_MT_POSITION_X, 4095),
            (EV_ABS, ABS_MT_POSITION_Y, 4095),
            (EV_KEY, BTN_TOUCH, 1),
            (EV_ABS, ABS_X, 4095),
            (EV_ABS, ABS_Y, 4095),
            SYN,
        ],
    );
    assert_eq!(
        down.last(),
        Some(&LocalEventKind::Button {
            button: PointerButton::Left,
            down: true,
            x: 799,
            y: 479
        })
    );
    assert!(matches!(
        down[0],
        LocalEventKind::Absolute {
            contact: true,
            x: 799,
            ..
        }
    ));
    let up = run(
        &mut d,
        &mut c,
        &[
            (EV_ABS, ABS_MT_TRACKING_ID, -1),
            (EV_KEY, BTN_TOUCH, 0),
            SYN,
        ],
    );
    assert_eq!(
        up,
        vec![LocalEventKind::Button {
            button: PointerButton::Left,
            down: false,
            x: 799,
            y: 479
        }]
    );
}

#[test]
fn multitouch_only_screens_follow_the_first_contact() {
    let caps = mt_only_touchscreen();
    let mut d = Decoder::new(&info(&caps), &caps);
    let mut c = ctx(1000, 500);
    let out = run(
        &mut d,
        &mut c,
        &[
            (EV_ABS, ABS_MT_SLOT, 0),
            (EV_ABS, ABS_MT_TRACKING_ID, 1),
            (EV_ABS, ABS_MT_POSITION_X, 100),
            (EV_ABS, ABS_MT_POSITION_Y, 200),
            SYN,
        ],
    );
    assert_eq!(
        out.last(),
        Some(&LocalEventKind::Button {
            button: PointerButton::Left,
            down: true,
            x: 100,
            y: 200
        })
    );
    // A second finger does not move the primary position.
    let out = run(
        &mut d,
        &mut c,
        &[
            (EV_ABS, ABS_MT_SLOT, 1),
            (EV_ABS, ABS_MT_TRACKING_ID, 2),
            (EV_ABS, ABS_MT_POSITION_X, 900),
            (EV_ABS, ABS_MT_POSITION_Y, 400),
            SYN,
        ],
    );
    assert_eq!(out, vec![LocalEventKind::Activity]);
    let out = run(
        &mut d,
        &mut c,
        &[
            (EV_ABS, ABS_MT_TRACKING_ID, -1),
            (EV_ABS, ABS_MT_SLOT, 0),
            (EV_ABS, ABS_MT_TRACKING_ID, -1),
            SYN,
        ],
    );
    assert_eq!(
        out,
        vec![LocalEventKind::Button {
            button: PointerButton::Left,
            down: false,
            x: 100,
            y: 200
        }]
    );
}

#[test]
fn activity_flags() {
    assert!(LocalEventKind::Activity.is_activity());
    assert!(
        LocalEventKind::Key {
            code: KEY_A,
            down: true
        }
        .is_activity()
    );
    assert!(!LocalEventKind::DeviceRemoved.is_activity());
    assert!(
        !LocalEventKind::GrabFailed {
            error: String::new()
        }
        .is_activity()
    );
}

#[tokio::test]
async fn grab_guards_nest_and_release_on_drop() {
    let dir = std::env::temp_dir().join(format!("shoulder-input-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = LocalInputConfig::new(ScreenSize::new(100, 100).unwrap());
    cfg.dir = dir.clone();
    let local = LocalInput::start(cfg).unwrap();
    assert!(!local.is_grab_wanted());
    let a = local.grab();
    let b = local.grab();
    assert!(local.is_grab_wanted());
    drop(a);
    assert!(local.is_grab_wanted());
    drop(b);
    assert!(!local.is_grab_wanted());
    // An error path: the guard goes away with a panic unwinding past it.
    let shared = local.shared.clone();
    let r = std::panic::catch_unwind(move || {
        let _g = GrabGuard::new(shared);
        panic!("prompt failed");
    });
    assert!(r.is_err());
    assert!(!local.is_grab_wanted());
    assert!(local.devices().is_empty());
    // Through a handle, as when the reader runs in its own task.
    let handle = local.handle();
    let g = handle.grab();
    assert!(local.is_grab_wanted() && handle.is_grab_wanted());
    drop(g);
    assert!(!local.is_grab_wanted());
    handle.set_screen(ScreenSize::new(10, 10).unwrap());
    assert_eq!(local.shared.lock_context().cursor, (9, 9));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_grab_on_an_unplugged_device_is_not_a_failure() {
    use std::io::Error;
    assert!(matches!(GrabOutcome::of(Ok(())), GrabOutcome::Done));
    // Unplugged during a prompt: the kernel dropped the grab with the
    // device; nothing to warn about or report as a failed grab.
    let gone = Error::from_raw_os_error(nix::errno::Errno::ENODEV as i32);
    assert!(matches!(GrabOutcome::of(Err(gone)), GrabOutcome::Gone));
    // Someone else holds the grab: that is a failure the agent reports.
    let busy = Error::from_raw_os_error(nix::errno::Errno::EBUSY as i32);
    match GrabOutcome::of(Err(busy)) {
        GrabOutcome::Failed(e) => assert_eq!(e.raw_os_error(), Some(16)),
        other => panic!("EBUSY must be a failure, got {other:?}"),
    }
}

#[test]
fn missing_input_dir_is_a_readable_error() {
    let e = enumerate(Path::new("/nonexistent/input")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/input"), "{e}");
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let cfg = LocalInputConfig::new(ScreenSize::new(10, 10).unwrap());
    assert!(matches!(LocalInput::start(cfg), Err(InputError::NoRuntime)));
}

#[test]
fn touch_choice_parses_from_config_words() {
    assert_eq!("auto".parse::<TouchChoice>(), Ok(TouchChoice::Auto));
    assert_eq!(" Always ".parse::<TouchChoice>(), Ok(TouchChoice::Always));
    assert_eq!("never".parse::<TouchChoice>(), Ok(TouchChoice::Never));
    let e = "sometimes".parse::<TouchChoice>().unwrap_err();
    assert!(
        e.contains("\"sometimes\"") && e.contains("auto, always, never"),
        "{e}"
    );
}
