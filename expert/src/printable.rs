//! Text that came from a device, made safe to put in front of the expert.
//!
//! Device names, chat lines and the reasons a device gives are written by
//! whoever controls the device. Printed raw to a terminal, escape sequences
//! in them retitle the window, clear the screen, move the cursor over our
//! own lines, or (on some terminals) write files and answer back as if
//! typed. A line break lets a device forge a line of ours ("Connected to…").
//! Bidirectional overrides make text read differently from what it is.
//!
//! [`printable`] keeps every printable character (any script, emoji) and
//! removes the rest: whole escape sequences (so their parameters do not
//! leak as junk), other C0 and C1 controls and DEL, and bidi controls; tabs
//! and line breaks become spaces.

/// ESC: starts escape sequences.
const ESC: char = '\u{1b}';
/// BEL ends an OSC sequence (the xterm form).
const BEL: char = '\u{07}';
/// String terminator, the one-character C1 form.
const ST: char = '\u{9c}';

/// `s` with control characters and escape sequences removed; see the
/// module docs. Text without any is returned unchanged.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ESC => match chars.peek().copied() {
                Some('[') => {
                    chars.next();
                    skip_csi(&mut chars);
                }
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    chars.next();
                    skip_string(&mut chars);
                }
                Some(n) if (' '..='~').contains(&n) => {
                    // ESC, intermediates (0x20–0x2F), one final (0x30–0x7E).
                    while let Some(&i) = chars.peek() {
                        chars.next();
                        if !(' '..='/').contains(&i) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Skips the rest of a CSI sequence: parameters and intermediates up to
/// the final byte (0x40–0x7E). A control character inside ends it early
/// and is left for the caller to drop.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(&c) = chars.peek() {
        if c.is_control() {
            return;
        }
        chars.next();
        if ('@'..='~').contains(&c) {
            return;
        }
    }
}

/// Skips the body of an OSC, DCS, SOS, PM or APC string up to its
/// terminator (BEL, ESC \ or ST); an unterminated one runs to the end.
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            BEL | ST => return,
            ESC => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

/// Explicit bidirectional formatting characters (the "Trojan Source"
/// set): they reorder what follows on the line.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_removed_whole() {
        assert_eq!(printable("\x1b]0;pwned\x07\x1b[2J"), "");
        assert_eq!(printable("hi \x1b]0;pwned\x07\x1b[2Jthere"), "hi there");
        assert_eq!(printable("a\x1b[1;31mred\x1b[0m b"), "ared b");
        assert_eq!(
            printable("x\x1b]8;;http://e.invalid\x1b\\link\x1b]8;;\x1b\\"),
            "xlink"
        );
        assert_eq!(printable("\x1bPq#0;2;0;0;0\x1b\\ok"), "ok");
        assert_eq!(printable("\x1b(0lqk\x1b(B"), "lqk");
        assert_eq!(printable("\x1bc reset"), " reset");
        assert_eq!(printable("\u{9b}2Jc1\u{9d}0;t\u{9c}!"), "c1!");
        // Unterminated: the rest is swallowed, never printed raw.
        assert_eq!(printable("ok\x1b]0;never ends"), "ok");
        assert_eq!(printable("ok\x1b[12"), "ok");
        assert_eq!(printable("trailing\x1b"), "trailing");
    }

    #[test]
    fn other_controls_go_and_printable_text_stays() {
        assert_eq!(printable("a\x00b\x07c\x08d\x7fe\u{85}f"), "abcdef");
        assert_eq!(
            printable("line\nConnected to bank.\r\tx"),
            "line Connected to bank.  x"
        );
        assert_eq!(printable("user\u{202e}gpj.exe"), "usergpj.exe");
        let kind = "Kiosk 12 — Café ☕ 東京 👩‍🔧";
        assert_eq!(printable(kind), kind);
        // A CSI cut short by another control does not eat the text after it.
        assert_eq!(printable("\x1b[1\nnext"), " next");
    }
}
