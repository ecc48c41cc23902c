//! The value ranges the types alone do not check.

use std::time::Duration;

use super::{
    ALLOWED_EXPERT_FORMS, AllowedExpert, Config, DEFAULT_PORT, MAX_ARGON2_ITERATIONS,
    MAX_ARGON2_MEMORY_KIB, MAX_CONCURRENT_HASHES, MAX_HASH_MEMORY_KIB, MAX_INPUT_RATE,
    MAX_PRE_AUTH_CONNECTIONS, MAX_RESUME_GRACE, MIN_ARGON2_MEMORY_KIB, MIN_INPUT_RATE,
};
use crate::util::format_duration;

/// The problem and fix of a setting this build has no feature for.
pub(super) fn built_without(what: &str, remove: &str, feature: &str) -> (String, String) {
    (
        format!("this agent was built without {what}"),
        format!(
            "remove {remove}, or install an agent built with the `{feature}` feature (Yocto: PACKAGECONFIG {feature})"
        ),
    )
}

impl Config {
    /// Checks value ranges the types alone do not. Returns the table, key,
    /// problem and fix of the first bad value.
    #[allow(clippy::type_complexity)]
    pub(super) fn check(&self) -> Result<(), (&'static str, &'static str, String, String)> {
        let err = |table, key, msg: String, fix: &str| Err((table, key, msg, fix.to_string()));
        // A setting this build cannot honour: which feature brings it.
        let without = |table, key, what: &str, remove: &str, feature: &str| {
            let (message, fix) = built_without(what, remove, feature);
            err(table, key, message, &fix)
        };
        if self.listen.is_empty() && self.enabled && self.broker.is_none() {
            return err(
                "",
                "listen",
                "no listen address while enabled (and no [broker])".into(),
                &format!("add at least one address, e.g. listen = [\"0.0.0.0:{DEFAULT_PORT}\"]"),
            );
        }
        if !self.help_desk.trim().is_empty() && !cfg!(feature = "call") {
            return without("", "help_desk", "calling out", "help_desk", "call");
        }
        #[cfg(feature = "files")]
        if self.files.any() {
            if let Some(d) = self.files.readable.iter().find(|d| !d.is_absolute()) {
                return err(
                    "files",
                    "readable",
                    format!("\"{}\" is not an absolute path", d.display()),
                    "name directories from the root, e.g. readable = [\"/var/log/kiosk\"]",
                );
            }
            let drop = &self.files.drop;
            if !drop.as_os_str().is_empty() && !drop.is_absolute() {
                return err(
                    "files",
                    "drop",
                    format!("\"{}\" is not an absolute path", drop.display()),
                    "name the directory from the root, e.g. drop = \"/var/lib/shoulder/incoming\"",
                );
            }
            if self.files.max_size_mib == 0 || self.files.max_size_mib > 64 * 1024 {
                return err(
                    "files",
                    "max_size_mib",
                    format!("{} is out of range", self.files.max_size_mib),
                    "use 1 to 65536 (256 by default)",
                );
            }
        }
        #[cfg(feature = "record")]
        {
            let r = &self.record;
            if !r.dir.as_os_str().is_empty() && !r.dir.is_absolute() {
                return err(
                    "record",
                    "dir",
                    format!("\"{}\" is not an absolute path", r.dir.display()),
                    "name the directory from the root, e.g. dir = \"/var/lib/shoulder/records\"",
                );
            }
            if r.max_session_mib == 0 || r.max_session_mib > 64 * 1024 {
                return err(
                    "record",
                    "max_session_mib",
                    format!("{} is out of range", r.max_session_mib),
                    "use 1 to 65536 (64 by default)",
                );
            }
            if r.max_total_mib < r.max_session_mib {
                return err(
                    "record",
                    "max_total_mib",
                    format!(
                        "{} MiB cannot hold one session's {} MiB",
                        r.max_total_mib, r.max_session_mib
                    ),
                    "make max_total_mib at least max_session_mib (512 and 64 by default)",
                );
            }
        }
        if let Some(b) = &self.broker {
            if !cfg!(feature = "broker") {
                return without("broker", "address", "broker support", "[broker]", "broker");
            }
            let a = b.address.trim();
            if a.is_empty() || a.contains(char::is_whitespace) || a.contains('/') {
                return err(
                    "broker",
                    "address",
                    format!("\"{}\" is not a broker address", b.address),
                    "write host or host:port, e.g. address = \"broker.plant.example:8883\"",
                );
            }
            let p = b.prefix.trim_matches('/');
            if p.is_empty()
                || p.len() > 128
                || p.split('/').any(|l| {
                    l.is_empty()
                        || l.chars()
                            .any(|c| matches!(c, '+' | '#' | '$') || c.is_control())
                })
            {
                return err(
                    "broker",
                    "prefix",
                    format!("\"{}\" is not a usable topic prefix", b.prefix),
                    "use letters, digits, '-', '_' and '/' between levels, e.g. prefix = \"shoulder\"",
                );
            }
            if b.help_expires < Duration::from_secs(60)
                || b.help_expires > Duration::from_secs(24 * 3600)
            {
                return err(
                    "broker",
                    "help_expires",
                    format!("{} is out of range", format_duration(b.help_expires)),
                    "use 1m to 24h (1h by default)",
                );
            }
            if b.keepalive < Duration::from_secs(5) || b.keepalive > Duration::from_secs(600) {
                return err(
                    "broker",
                    "keepalive",
                    format!("{} is out of range", format_duration(b.keepalive)),
                    "use 5s to 10m (30s by default)",
                );
            }
        }
        if self.max_invitation_lifetime.is_zero() {
            return err(
                "",
                "max_invitation_lifetime",
                "must be longer than 0".into(),
                "use e.g. \"24h\"",
            );
        }
        if self.consent_timeout < Duration::from_secs(5)
            || self.consent_timeout > Duration::from_secs(600)
        {
            return err(
                "",
                "consent_timeout",
                format!(
                    "{} is outside 5s–10m",
                    format_duration(self.consent_timeout)
                ),
                "people need a few seconds to read a prompt; use e.g. \"60s\"",
            );
        }
        if self.pre_auth_timeout < Duration::from_secs(1)
            || self.pre_auth_timeout > Duration::from_secs(60)
        {
            return err(
                "",
                "pre_auth_timeout",
                format!(
                    "{} is outside 1s–60s",
                    format_duration(self.pre_auth_timeout)
                ),
                "use e.g. \"10s\"",
            );
        }
        if self.resume_grace > MAX_RESUME_GRACE {
            return err(
                "",
                "resume_grace",
                format!(
                    "{} is longer than {}",
                    format_duration(self.resume_grace),
                    format_duration(MAX_RESUME_GRACE)
                ),
                "use e.g. \"20s\", or \"0s\" to turn resumption off",
            );
        }
        if self.control_backoff > shoulder_proto::session::MAX_CONTROL_BACKOFF {
            return err(
                "",
                "control_backoff",
                format!(
                    "{} is longer than {}",
                    format_duration(self.control_backoff),
                    format_duration(shoulder_proto::session::MAX_CONTROL_BACKOFF)
                ),
                "use e.g. \"5s\", or \"0s\" to let experts ask again at once",
            );
        }
        if self.keepalive_interval < Duration::from_secs(1)
            || self.keepalive_interval > Duration::from_secs(60)
        {
            return err(
                "",
                "keepalive_interval",
                format!(
                    "{} is outside 1s–60s",
                    format_duration(self.keepalive_interval)
                ),
                "use e.g. \"5s\"",
            );
        }
        if self.peer_timeout < self.keepalive_interval * 2
            || self.peer_timeout > Duration::from_secs(600)
        {
            return err(
                "",
                "peer_timeout",
                format!(
                    "{} is outside twice keepalive_interval ({})–10m",
                    format_duration(self.peer_timeout),
                    format_duration(self.keepalive_interval * 2)
                ),
                "a live peer must get at least two keepalives in; use e.g. \"15s\"",
            );
        }
        if !(MIN_INPUT_RATE..=MAX_INPUT_RATE).contains(&self.max_input_rate) {
            return err(
                "",
                "max_input_rate",
                format!(
                    "{} is outside {MIN_INPUT_RATE}–{MAX_INPUT_RATE}",
                    self.max_input_rate
                ),
                "use e.g. 300 (far above a human, far below a flood)",
            );
        }
        if self.max_pre_auth_connections == 0
            || self.max_pre_auth_connections > MAX_PRE_AUTH_CONNECTIONS
        {
            return err(
                "",
                "max_pre_auth_connections",
                format!(
                    "{} is outside 1–{MAX_PRE_AUTH_CONNECTIONS}",
                    self.max_pre_auth_connections
                ),
                "use e.g. 32",
            );
        }
        if self.auth_failures_per_minute == 0 {
            return err(
                "",
                "auth_failures_per_minute",
                "0 would lock everyone out after one typo".into(),
                "use e.g. 10",
            );
        }
        if self.password_failures_per_minute == 0 {
            return err(
                "",
                "password_failures_per_minute",
                "0 would refuse every invitation password".into(),
                "use e.g. 60",
            );
        }
        if self.max_concurrent_hashes == 0 || self.max_concurrent_hashes > MAX_CONCURRENT_HASHES {
            return err(
                "",
                "max_concurrent_hashes",
                format!(
                    "{} is outside 1–{MAX_CONCURRENT_HASHES}",
                    self.max_concurrent_hashes
                ),
                "use 1 (one password check at a time; others wait a moment)",
            );
        }
        if self.max_fps == 0 || self.max_fps > 120 {
            return err(
                "",
                "max_fps",
                format!("{} is outside 1–120", self.max_fps),
                "use e.g. 30",
            );
        }
        if self.audit_max_bytes < 64 * 1024 {
            return err(
                "",
                "audit_max_bytes",
                format!("{} is below 64 KiB", self.audit_max_bytes),
                "use e.g. 8388608 (8 MiB)",
            );
        }
        if self.device_name.len() > shoulder_proto::MAX_NAME_LEN {
            return err(
                "",
                "device_name",
                format!("longer than {} bytes", shoulder_proto::MAX_NAME_LEN),
                "use a shorter name",
            );
        }
        for e in &self.allowed_experts {
            if let Err(m) = AllowedExpert::parse(e) {
                return err("", "allowed_experts", m, ALLOWED_EXPERT_FORMS);
            }
        }
        let a = &self.argon2;
        if !(MIN_ARGON2_MEMORY_KIB..=MAX_ARGON2_MEMORY_KIB).contains(&a.memory_kib) {
            return err(
                "argon2",
                "memory_kib",
                format!(
                    "{} is outside {MIN_ARGON2_MEMORY_KIB}–{MAX_ARGON2_MEMORY_KIB}",
                    a.memory_kib
                ),
                "the default 19456 (19 MiB) suits devices with 256 MiB of RAM or more",
            );
        }
        if a.iterations == 0 || a.iterations > MAX_ARGON2_ITERATIONS {
            return err(
                "argon2",
                "iterations",
                format!("{} is outside 1–{MAX_ARGON2_ITERATIONS}", a.iterations),
                "use 2",
            );
        }
        if a.parallelism == 0 || a.parallelism > 8 {
            return err(
                "argon2",
                "parallelism",
                format!("{} is outside 1–8", a.parallelism),
                "use 1",
            );
        }
        if u64::from(a.memory_kib) < 8 * u64::from(a.parallelism) {
            return err(
                "argon2",
                "memory_kib",
                "less than 8 KiB per lane".into(),
                "raise memory_kib or lower parallelism",
            );
        }
        let hash_memory = self.max_concurrent_hashes as u64 * u64::from(self.argon2.memory_kib);
        if hash_memory > MAX_HASH_MEMORY_KIB {
            return err(
                "",
                "max_concurrent_hashes",
                format!(
                    "{} hashes × {} KiB (argon2.memory_kib) is {} MiB, more than {} MiB",
                    self.max_concurrent_hashes,
                    self.argon2.memory_kib,
                    hash_memory / 1024,
                    MAX_HASH_MEMORY_KIB / 1024
                ),
                "lower max_concurrent_hashes (1 is enough for people typing passwords) or argon2.memory_kib",
            );
        }
        if let Err(e) =
            shoulder_input::Hotkeys::parse(&self.input.stop_hotkey, &self.input.end_hotkey)
        {
            return err(
                "input",
                "stop_hotkey",
                e.to_string(),
                "write chords like \"Ctrl+Alt+Shift+S\"; the two chords must differ",
            );
        }
        if self.input.local_idle > shoulder_input::holdback::MAX_HOLDBACK {
            return err(
                "input",
                "local_idle",
                format!(
                    "{} is longer than 10s",
                    format_duration(self.input.local_idle)
                ),
                "use e.g. \"750ms\"",
            );
        }
        if let Err(e) = shoulder_input::KeyPolicy::parse(&self.input.allow_keys) {
            return err(
                "input",
                "allow_keys",
                e.to_string(),
                "list only families to allow, e.g. allow_keys = [\"vt-switch\"], or [] for none",
            );
        }
        // Without `type-text` the default ("us", as the example has it)
        // stands: such an agent answers every text with "no layout".
        let name = self.input.keyboard_layout.as_str();
        let default_without_tables = name == "us" && !cfg!(feature = "type-text");
        if name != "off"
            && !default_without_tables
            && shoulder_proto::keyboard::Layout::named(name).is_none()
        {
            if !cfg!(feature = "type-text") {
                return without(
                    "input",
                    "keyboard_layout",
                    "typing text",
                    "keyboard_layout",
                    "type-text",
                );
            }
            return err(
                "input",
                "keyboard_layout",
                format!("there is no keyboard layout \"{name}\""),
                &format!(
                    "use one of {}, or \"off\"",
                    shoulder_proto::keyboard::layout_names()
                ),
            );
        }
        for (key, group) in [
            ("control_group", &self.control_group),
            ("invite_group", &self.invite_group),
        ] {
            if group.contains([':', '\n', ',']) || group.trim() != group {
                return err(
                    "",
                    key,
                    format!("`{group}` is not a group name"),
                    "write a group name from /etc/group or a numeric gid, or \"\" for root only",
                );
            }
        }
        Ok(())
    }
}
