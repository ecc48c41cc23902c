//! The `shoulder` binary as a child process, with an isolated config
//! directory, and the sentence it ends with. The agent, the relay and the
//! client library in process are in [`crate::agent`], [`crate::relay`] and
//! [`crate::expert`].

use std::path::PathBuf;
use std::process::{Command, Output};

/// The expert as a user of the `shoulder` command: a scratch directory
/// with an isolated config dir, and the binary run in it. (The client
/// library in process is [`crate::expert::ClientExpert`]; a raw protocol
/// peer is [`crate::tls_expert::TlsExpert`].)
#[derive(Debug)]
pub struct CliExpert {
    pub dir: tempfile::TempDir,
}

impl Default for CliExpert {
    fn default() -> Self {
        Self::new()
    }
}

impl CliExpert {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(crate::bins::client());
        c.args(args)
            .env("SHOULDER_CONFIG_DIR", self.path("config"))
            .stdin(std::process::Stdio::null());
        c
    }

    /// A fresh invitation from `agent` (30 minutes, `password`) saved as
    /// `name`, and its password file: the arguments `TARGET
    /// --password-file FILE` of a connecting command.
    pub async fn invited(
        &self,
        agent: &crate::agent::Agent,
        name: &str,
        password: &str,
    ) -> (String, String) {
        let (_, file) = agent.invite_file("30m", password).await;
        let pw_name = format!("{name}.password");
        (self.write(name, &file), self.write(&pw_name, password))
    }

    /// `shoulder watch` arguments for `invitation`, writing `stats`.
    pub fn watch_args<'a>(
        invitation: &'a str,
        password_file: &'a str,
        stats: &'a str,
    ) -> Vec<&'a str> {
        vec![
            "watch",
            invitation,
            "--password-file",
            password_file,
            "--stats-json",
            stats,
        ]
    }

    /// Runs `shoulder ARGS` to completion off the async runtime.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last line of stderr: the sentence the user reads.
pub fn sentence(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or("").to_string()
}

pub fn assert_fails_with(o: &Output, expected: &str) {
    assert!(!o.status.success(), "expected a failure, got {o:?}");
    assert_eq!(sentence(o), expected, "full stderr:\n{}", stderr(o));
}
