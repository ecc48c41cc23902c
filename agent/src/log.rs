//! A small `tracing` subscriber: one line per event on stderr (journald
//! adds its own time stamps, but a terminal user wants them too), filtered
//! by level. `RUST_LOG` takes a level (`debug`) or `target=level` pairs
//! (`shoulder_agent=debug,warn`): the longest matching target prefix wins.
//! The full `tracing-subscriber` costs tens of KiB of the device binary for
//! features (spans, formatting layers) the agent does not use.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::util::rfc3339;

/// Level filter from `RUST_LOG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: Option<Level>,
    targets: Vec<(String, Option<Level>)>,
}

impl Filter {
    /// Parses `RUST_LOG` syntax; unknown words are ignored. `off` disables.
    pub fn parse(spec: &str) -> Self {
        let level = |s: &str| -> Option<Option<Level>> {
            match s.trim().to_ascii_lowercase().as_str() {
                "off" => Some(None),
                "error" => Some(Some(Level::ERROR)),
                "warn" => Some(Some(Level::WARN)),
                "info" => Some(Some(Level::INFO)),
                "debug" => Some(Some(Level::DEBUG)),
                "trace" => Some(Some(Level::TRACE)),
                _ => None,
            }
        };
        let mut f = Filter {
            default: Some(Level::INFO),
            targets: Vec::new(),
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((t, l)) => {
                    if let Some(l) = level(l) {
                        f.targets.push((t.trim().to_string(), l));
                    }
                }
                None => match level(part) {
                    Some(l) => f.default = l,
                    // A bare target means everything from it.
                    None => f.targets.push((part.to_string(), Some(Level::TRACE))),
                },
            }
        }
        // Longest prefix first.
        f.targets.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        f
    }

    pub fn enabled(&self, target: &str, level: &Level) -> bool {
        let max = self
            .targets
            .iter()
            .find(|(t, _)| target.starts_with(t.as_str()))
            .map_or(self.default, |(_, l)| *l);
        max.is_some_and(|max| *level <= max)
    }
}

/// Writes events to stderr.
#[derive(Debug)]
pub struct StderrLog {
    filter: Filter,
}

impl StderrLog {
    pub fn new(filter: Filter) -> Self {
        Self { filter }
    }

    /// Installs the subscriber for the process, with `RUST_LOG` (default
    /// `info`).
    pub fn install() {
        let spec = std::env::var("RUST_LOG").unwrap_or_default();
        let _ = tracing::subscriber::set_global_default(Self::new(Filter::parse(&spec)));
    }
}

/// Formats an event's fields: the message first, then `name=value`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

impl Subscriber for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata.target(), metadata.level())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Spans are not used; every span is the same inert one.
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        let m = event.metadata();
        let text = format!(
            "{} {:>5} {}: {}{}\n",
            rfc3339(SystemTime::now()),
            m.level(),
            m.target(),
            line.message,
            line.fields
        );
        // One write per line, so lines from threads do not interleave.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_levels_and_targets() {
        let f = Filter::parse("");
        assert!(f.enabled("shoulder_agent", &Level::INFO));
        assert!(!f.enabled("shoulder_agent", &Level::DEBUG));
        let f = Filter::parse("warn,shoulder_agent::service=debug");
        assert!(f.enabled("shoulder_agent::service", &Level::DEBUG));
        assert!(!f.enabled("shoulder_agent::ui", &Level::INFO));
        assert!(f.enabled("rustls", &Level::WARN));
        let f = Filter::parse("off");
        assert!(!f.enabled("x", &Level::ERROR));
        let f = Filter::parse("debug,rustls=off");
        assert!(!f.enabled("rustls::server", &Level::ERROR));
        assert!(f.enabled("tokio", &Level::DEBUG));
    }
}
