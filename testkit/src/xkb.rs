//! What a compositor would make of injected key events: the events go
//! through libxkbcommon (the host's, with xkb-data and the en_US.UTF-8
//! compose table, as Weston, X clients and toolkits use them) and the
//! characters come out. Independent of the agent's own tables, which it
//! checks.

use std::io::Write;
use std::process::{Command, Stdio};

use shoulder_proto::Key;

const DECODER: &str = r#"
import ctypes, sys
x = ctypes.CDLL("libxkbcommon.so.0")
class Names(ctypes.Structure):
    _fields_ = [(f, ctypes.c_char_p) for f in ("rules", "model", "layout", "variant", "options")]
vp, u32 = ctypes.c_void_p, ctypes.c_uint32
x.xkb_context_new.restype = vp
x.xkb_keymap_new_from_names.restype = vp
x.xkb_keymap_new_from_names.argtypes = [vp, ctypes.POINTER(Names), ctypes.c_int]
x.xkb_state_new.restype = vp
x.xkb_state_new.argtypes = [vp]
x.xkb_state_update_key.argtypes = [vp, u32, ctypes.c_int]
x.xkb_state_key_get_one_sym.argtypes = [vp, u32]
x.xkb_state_key_get_one_sym.restype = u32
x.xkb_state_key_get_utf8.argtypes = [vp, u32, ctypes.c_char_p, ctypes.c_size_t]
x.xkb_compose_table_new_from_locale.restype = vp
x.xkb_compose_table_new_from_locale.argtypes = [vp, ctypes.c_char_p, ctypes.c_int]
x.xkb_compose_state_new.restype = vp
x.xkb_compose_state_new.argtypes = [vp, ctypes.c_int]
x.xkb_compose_state_feed.argtypes = [vp, u32]
x.xkb_compose_state_get_status.argtypes = [vp]
x.xkb_compose_state_get_utf8.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
x.xkb_compose_state_reset.argtypes = [vp]
layout, variant = sys.argv[1], sys.argv[2]
ctx = x.xkb_context_new(0)
names = Names(b"evdev", b"pc105", layout.encode(), variant.encode(), b"")
keymap = x.xkb_keymap_new_from_names(ctx, ctypes.byref(names), 0)
if not keymap:
    sys.exit("no XKB layout " + layout)
state = x.xkb_state_new(keymap)
table = x.xkb_compose_table_new_from_locale(ctx, b"en_US.UTF-8", 0)
if not table:
    sys.exit("no compose table for en_US.UTF-8 (libx11-data)")
compose = x.xkb_compose_state_new(table, 0)
out = []
buf = ctypes.create_string_buffer(64)
for line in sys.stdin:
    code, down = (int(v) for v in line.split())
    kc = code + 8
    if down:
        sym = x.xkb_state_key_get_one_sym(state, kc)
        x.xkb_compose_state_feed(compose, sym)
        status = x.xkb_compose_state_get_status(compose)
        if status == 2:  # composed
            x.xkb_compose_state_get_utf8(compose, buf, 64)
            out.append(buf.value.decode())
            x.xkb_compose_state_reset(compose)
        elif status == 0:  # nothing to compose: the key's own character
            x.xkb_state_key_get_utf8(state, kc, buf, 64)
            out.append(buf.value.decode())
        elif status == 3:  # cancelled
            x.xkb_compose_state_reset(compose)
    x.xkb_state_update_key(state, kc, 1 if down else 0)
sys.stdout.write("".join(out).replace("\r", "\n"))
"#;

/// The text `keys` type under XKB layout `layout` (variant `variant`, or
/// ""). Panics with the reason when python3 or libxkbcommon is missing
/// (scripts/setup installs them).
pub fn typed_text(layout: &str, variant: &str, keys: &[Key]) -> String {
    let mut child = Command::new("python3")
        .args(["-c", DECODER, layout, variant])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/setup installs it)");
    let input: String = keys
        .iter()
        .map(|k| format!("{} {}\n", k.code, u8::from(k.down)))
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the XKB decoder failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
