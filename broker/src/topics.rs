//! Who publishes where. Each client owns the tree of its own name (its
//! certificate's CN, which the broker takes as the user name):
//!
//! ```text
//! P/dev/DEVICE/presence      device writes (retained); everyone reads
//! P/dev/DEVICE/help          device writes (retained); everyone reads
//! P/dev/DEVICE/open          experts write; the device reads
//! P/dev/DEVICE/s/SID/e       the expert writes; the device reads
//! P/exp/EXPERT/s/SID/d       the device writes; the expert reads
//! ```
//!
//! Each side reads only its own tree, so no one else can read a session
//! even with wildcards (and what they would read is TLS ciphertext); the
//! writes into another's tree are of sessions whose random id only the two
//! ends know. `broker/mosquitto/acl` is this table for Mosquitto.

/// Longest name (device or expert) used in a topic.
pub const MAX_NAME: usize = 64;

/// The topics under one prefix (`shoulder` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            prefix: "shoulder".into(),
        }
    }
}

impl Topics {
    /// Topics under `prefix` (one or more levels, no wildcards).
    pub fn new(prefix: &str) -> Result<Self, String> {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty()
            || prefix.len() > 128
            || prefix.split('/').any(|l| check_name(l).is_err())
        {
            return Err(format!(
                "\"{prefix}\" is not a usable topic prefix — use letters, digits, '-', '_' and '/' between levels"
            ));
        }
        Ok(Self {
            prefix: prefix.to_string(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn presence(&self, device: &str) -> String {
        format!("{}/dev/{device}/presence", self.prefix)
    }

    pub fn all_presence(&self) -> String {
        format!("{}/dev/+/presence", self.prefix)
    }

    /// The device's open help request (retained; empty: none).
    pub fn help(&self, device: &str) -> String {
        format!("{}/dev/{device}/help", self.prefix)
    }

    pub fn all_help(&self) -> String {
        format!("{}/dev/+/help", self.prefix)
    }

    /// The device a help topic is about.
    pub fn device_of_help<'a>(&self, topic: &'a str) -> Option<&'a str> {
        self.device_of(topic, "/help")
    }

    pub fn open(&self, device: &str) -> String {
        format!("{}/dev/{device}/open", self.prefix)
    }

    pub fn to_device(&self, device: &str, sid: &str) -> String {
        format!("{}/dev/{device}/s/{sid}/e", self.prefix)
    }

    pub fn all_to_device(&self, device: &str) -> String {
        format!("{}/dev/{device}/s/+/e", self.prefix)
    }

    pub fn to_expert(&self, expert: &str, sid: &str) -> String {
        format!("{}/exp/{expert}/s/{sid}/d", self.prefix)
    }

    pub fn all_to_expert(&self, expert: &str) -> String {
        format!("{}/exp/{expert}/s/+/d", self.prefix)
    }

    /// The device a presence topic is about.
    pub fn device_of_presence<'a>(&self, topic: &'a str) -> Option<&'a str> {
        self.device_of(topic, "/presence")
    }

    /// The device of `P/dev/DEVICE{leaf}`.
    fn device_of<'a>(&self, topic: &'a str, leaf: &str) -> Option<&'a str> {
        topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/dev/")?
            .strip_suffix(leaf)
            .filter(|d| check_name(d).is_ok())
    }
}

/// Whether `name` can be one topic level: 1 to 64 bytes, no '/', '+',
/// '#', control characters or spaces at either end.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.trim() == name
        && !name
            .chars()
            .any(|c| matches!(c, '/' | '+' | '#' | '$') || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" cannot be used as a name at the broker (1 to {MAX_NAME} bytes, no '/', '+', '#', '$' or control characters)",
            name.escape_default()
        ))
    }
}

/// Whether `sid` is a tunnel id: 32 lowercase hex digits.
pub fn is_sid(sid: &str) -> bool {
    sid.len() == 32 && sid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_escape_their_level_are_refused() {
        for bad in ["", "a/b", "+", "a#", "$SYS", "x\n", " x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["kiosk-12", "Ann Expert", "hall3.line2"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        assert!(Topics::new("plant/a").is_ok());
        assert!(Topics::new("plant/+").is_err());
        let t = Topics::default();
        assert_eq!(t.device_of_presence("shoulder/dev/k1/presence"), Some("k1"));
        assert_eq!(t.device_of_presence("shoulder/dev/a/b/presence"), None);
        assert!(is_sid(&"0a".repeat(16)));
        assert!(!is_sid(&"0A".repeat(16)));
    }
}
