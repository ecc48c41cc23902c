//! The pre-auth log: unauthenticated connections summed up per source and
//! interval.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use super::hashing::GateStats;
use crate::audit::Context;
use crate::records::AuditRecord;
use crate::util::rfc3339;

/// How often unauthenticated connections are summed up in the pre-auth log.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Sources summed up separately per interval; the rest share one record
/// (source `other`), so a spread-out flood costs a bounded number of lines.
pub(super) const MAX_SUMMARY_SOURCES: usize = 256;
/// Distinct reasons counted per source; further ones count as `other`.
const MAX_REASONS: usize = 16;
/// Client certificate fingerprints kept per source in a summary: enough to
/// name who tried, bounded against certificate spraying.
const MAX_FINGERPRINTS: usize = 4;

/// The pre-auth log next to `audit_log`: `audit.jsonl` →
/// `audit.pre-auth.jsonl`. Rotated like the audit log, separately, so its
/// noise never pushes session records out.
pub fn pre_auth_log_path(audit_log: &Path) -> PathBuf {
    let name = audit_log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    let new = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.pre-auth.{ext}"),
        _ => format!("{name}.pre-auth"),
    };
    audit_log.with_file_name(new)
}

/// Unauthenticated connections of one interval, per source.
#[derive(Debug, Default)]
pub(super) struct Summary {
    pub(super) sources: HashMap<String, SourceSummary>,
}

#[derive(Debug)]
pub(super) struct SourceSummary {
    pub(super) connections: u64,
    pub(super) failures: u64,
    pub(super) reasons: BTreeMap<String, u64>,
    last_detail: Option<String>,
    fingerprints: Vec<String>,
    first: SystemTime,
    last: SystemTime,
}

impl Summary {
    pub(super) fn add(
        &mut self,
        source: IpAddr,
        reason: &str,
        failure: bool,
        detail: Option<&str>,
        fingerprint: Option<&str>,
    ) {
        let mut key = source.to_string();
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SUMMARY_SOURCES {
            key = "other".into();
        }
        let now = SystemTime::now();
        let s = self.sources.entry(key).or_insert_with(|| SourceSummary {
            connections: 0,
            failures: 0,
            reasons: BTreeMap::new(),
            last_detail: None,
            fingerprints: Vec::new(),
            first: now,
            last: now,
        });
        s.connections += 1;
        s.failures += u64::from(failure);
        let reason = if s.reasons.contains_key(reason) || s.reasons.len() < MAX_REASONS {
            reason
        } else {
            "other"
        };
        *s.reasons.entry(reason.to_string()).or_default() += 1;
        if let Some(d) = detail {
            s.last_detail = Some(d.to_string());
        }
        if let Some(fp) = fingerprint
            && s.fingerprints.len() < MAX_FINGERPRINTS
            && !s.fingerprints.iter().any(|f| f == fp)
        {
            s.fingerprints.push(fp.to_string());
        }
        s.last = now;
    }

    /// One `pre-auth-summary` per source and one `pre-auth-totals`, or
    /// nothing for a quiet interval.
    pub(super) fn records(self, gate: GateStats) -> Vec<(String, Context, Map<String, Value>)> {
        let mut out = Vec::new();
        let (mut connections, mut failures) = (0, 0);
        let sources = self.sources.len();
        let mut sorted: Vec<_> = self.sources.into_iter().collect();
        sorted.sort_by_key(|(_, s)| s.first);
        for (source, s) in sorted {
            connections += s.connections;
            failures += s.failures;
            let (event, fields) = AuditRecord::PreAuthSummary {
                connections: s.connections,
                failures: s.failures,
                reasons: &s.reasons,
                last_detail: s.last_detail.as_deref(),
                fingerprints: &s.fingerprints,
                first: rfc3339(s.first),
                last: rfc3339(s.last),
            }
            .into_parts();
            let ctx = Context {
                source: Some(source),
                ..Context::default()
            };
            out.push((event, ctx, fields));
        }
        if connections == 0 && gate.hashes == 0 && gate.queue_full == 0 {
            return out;
        }
        let (event, fields) = AuditRecord::PreAuthTotals {
            sources,
            connections,
            failures,
            hashes: gate.hashes,
            most_hashes_at_once: gate.most_at_once,
            hash_queue_full: gate.queue_full,
            hash_wait_expired: gate.expired,
        }
        .into_parts();
        out.push((event, Context::default(), fields));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_auth_log_sits_next_to_the_audit_log() {
        assert_eq!(
            pre_auth_log_path(Path::new("/var/lib/shoulder/audit.jsonl")),
            Path::new("/var/lib/shoulder/audit.pre-auth.jsonl")
        );
        assert_eq!(
            pre_auth_log_path(Path::new("/var/log/audit")),
            Path::new("/var/log/audit.pre-auth")
        );
    }
}
