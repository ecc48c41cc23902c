//! A config that could not be used, and where in the file the problem is.

use std::path::PathBuf;

use super::DEFAULT_PORT;

/// A config that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the config file {path}: {source} (fix: check the path given with --config)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: the file is {len} bytes; a config is a few KiB (fix: point --config at agent.toml)"
    )]
    TooLarge { path: PathBuf, len: u64 },
    #[error("{path}:{line}:{column}: {message}\n  fix: {fix}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        fix: String,
    },
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, column)
}

/// Finds `key = …` inside `[table]` (or at top level for `""`).
pub(super) fn find_key(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = name.trim().to_string();
            continue;
        }
        if current == table
            && let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let column = line.len() - line.trim_start().len() + 1;
            return Some((i + 1, column));
        }
    }
    None
}

pub(super) fn dotted(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.into()
    } else {
        format!("{table}.{key}")
    }
}

pub(super) fn fix_for(message: &str) -> String {
    if message.starts_with("unknown field") {
        "remove the key or correct its spelling; every key is listed in agent.example.toml".into()
    } else if message.contains("invalid socket address") {
        format!("write addresses as \"0.0.0.0:{DEFAULT_PORT}\" or \"[::]:{DEFAULT_PORT}\"")
    } else if message.contains("duration")
        || message.contains("capture source")
        || message.contains("rawfile")
        || message.contains("banner presenter")
        || message.contains("injection backend")
    {
        "see the example in the message".into()
    } else {
        "see agent.example.toml for the key's type and default".into()
    }
}
