//! The command line of `shoulder-agent`, parsed by hand: the grammar is
//! small, and a parser generator costs more than 100 KiB of the device
//! binary's 2.5 MiB budget.

use std::path::PathBuf;

/// The help text.
pub const USAGE: &str = "\
shoulder-agent: over-the-shoulder remote assistance for this device

Usage: shoulder-agent [--config PATH] COMMAND

Commands:
  run                          run the agent (the systemd service)
  keygen [--csr FILE]          create the device key and certificate (never
                               overwrites an existing key) and print the
                               SHA-256 fingerprint; --csr also writes a
                               signing request for the plant CA
  fingerprint                  print the device certificate's fingerprint
  doctor [--json]              check what this device offers the agent (the
                               display, how it is turned, uinput, local input,
                               privileges, ports) and say what to fix; send
                               its output when asking for help
  invite [--expires 30m] [--password-file FILE] [--for WHOM] [--out FILE] [--qr]
                               create an invitation: print its text (and a QR
                               code), write the file; the password comes from
                               FILE, a terminal prompt, or is generated;
                               --for \"Ann from the service desk\" is what the
                               consent prompt shows as who asks
  invite --list                list invitations
  invite --revoke ID           revoke an invitation
  ctl status|stop-control|end  talk to the running agent (control socket)
  ctl accept|decline [PROMPT]  answer prompt PROMPT (its id from `ctl status`),
                               or without it the prompt open right now
  ctl chat TEXT...             send a chat line to the expert
  ctl help [TEXT...]           ask a technician for help through the plant's
                               broker (what the matter is, optional)
  ctl help --withdraw          withdraw the open help request
  ctl call [HOST[:PORT]]       call a technician's `shoulder listen` (port
                               7576; default: the config's help_desk)
  ctl watch                    print events as JSON lines
  ctl rotate DEGREES|auto      the panel turned (0, 90, 180, 270): the expert's
                               view, pointer and the banner follow; auto:
                               what the display says, from the next session
  ctl invite [--expires 30m] [--password-file FILE] [--for WHOM]
                               create an invitation through the running agent

Options:
  --config PATH                config file (default /etc/shoulder/agent.toml)
  -h, --help                   this help
  -V, --version                the version
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Run,
    Keygen {
        csr: Option<PathBuf>,
    },
    Fingerprint,
    /// Check the device; `json`: machine-readable.
    Doctor {
        json: bool,
    },
    Invite(InviteArgs),
    InviteList,
    InviteRevoke {
        id: String,
    },
    Ctl(Ctl),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteArgs {
    pub expires: String,
    pub password_file: Option<PathBuf>,
    /// Whom it is for (the consent prompt's headline).
    pub for_whom: Option<String>,
    pub out: Option<PathBuf>,
    pub qr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ctl {
    Status,
    /// Answer the prompt with this id, or the one open now.
    Accept(Option<u64>),
    Decline(Option<u64>),
    StopControl,
    End,
    Chat(String),
    Watch,
    /// Degrees, checked by the agent.
    Rotate(u16),
    /// Follow what the display says again.
    RotateAuto,
    Help(String),
    HelpWithdraw,
    Call(Option<String>),
    Invite {
        expires: String,
        password_file: Option<PathBuf>,
        for_whom: Option<String>,
    },
}

/// A command line that does not parse; the message says what to type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} (see `shoulder-agent --help`)")]
pub struct UsageError(pub String);

const DEFAULT_EXPIRES: &str = "30m";

impl Cli {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, UsageError> {
        let mut config = None;
        let mut words = Vec::new();
        let mut it = args.into_iter();
        // `--config` may come anywhere; everything else is positional or
        // belongs to the command.
        while let Some(a) = it.next() {
            if a == "--config" {
                let v = it
                    .next()
                    .ok_or_else(|| UsageError("--config needs a path".into()))?;
                config = Some(PathBuf::from(v));
            } else if let Some(v) = a.strip_prefix("--config=") {
                config = Some(PathBuf::from(v));
            } else {
                words.push(a);
            }
        }
        if words.iter().any(|w| w == "-h" || w == "--help") {
            return Ok(Self {
                config,
                command: Command::Help,
            });
        }
        let mut words = words.into_iter();
        let command = match words.next().as_deref() {
            None => return Err(UsageError("a command is missing".into())),
            Some("help") => Command::Help,
            Some("-V" | "--version") => Command::Version,
            Some("run") => {
                no_more(words, "run")?;
                Command::Run
            }
            Some("fingerprint") => {
                no_more(words, "fingerprint")?;
                Command::Fingerprint
            }
            Some("doctor") => {
                let o = Options::parse(words, "doctor", &[], &["--json"])?;
                Command::Doctor {
                    json: o.flag("--json"),
                }
            }
            Some("keygen") => {
                let mut o = Options::parse(words, "keygen", &["--csr"], &[])?;
                Command::Keygen {
                    csr: o.value("--csr").map(PathBuf::from),
                }
            }
            Some("invite") => {
                let mut o = Options::parse(
                    words,
                    "invite",
                    &["--expires", "--password-file", "--for", "--out", "--revoke"],
                    &["--qr", "--list"],
                )?;
                let list = o.flag("--list");
                let revoke = o.value("--revoke");
                let create = ["--expires", "--password-file", "--for", "--out"]
                    .iter()
                    .any(|k| o.has(k))
                    || o.flag("--qr");
                match (list, revoke) {
                    (true, Some(_)) => {
                        return Err(UsageError("--list and --revoke do not go together".into()));
                    }
                    (true, None) | (false, Some(_)) if create => {
                        return Err(UsageError(
                            "--list and --revoke take no other invite options".into(),
                        ));
                    }
                    (true, None) => Command::InviteList,
                    (false, Some(id)) => Command::InviteRevoke { id },
                    (false, None) => Command::Invite(InviteArgs {
                        expires: o
                            .value("--expires")
                            .unwrap_or_else(|| DEFAULT_EXPIRES.into()),
                        password_file: o.value("--password-file").map(PathBuf::from),
                        for_whom: o.value("--for"),
                        out: o.value("--out").map(PathBuf::from),
                        qr: o.flag("--qr"),
                    }),
                }
            }
            Some("ctl") => Command::Ctl(parse_ctl(words)?),
            Some(other) => {
                return Err(UsageError(format!("unknown command `{other}`")));
            }
        };
        Ok(Self { config, command })
    }
}

fn parse_ctl(mut words: std::vec::IntoIter<String>) -> Result<Ctl, UsageError> {
    let sub = words
        .next()
        .ok_or_else(|| UsageError("ctl needs a command: status, accept, decline, stop-control, end, chat, watch, rotate or invite".into()))?;
    Ok(match sub.as_str() {
        "accept" | "decline" => {
            let prompt = match words.next() {
                None => None,
                Some(w) => Some(w.parse::<u64>().map_err(|_| {
                    UsageError(format!(
                        "ctl {sub}: `{w}` is not a prompt id (a number from `ctl status`)"
                    ))
                })?),
            };
            no_more(words, &format!("ctl {sub} PROMPT"))?;
            if sub == "accept" {
                Ctl::Accept(prompt)
            } else {
                Ctl::Decline(prompt)
            }
        }
        "status" | "stop-control" | "end" | "watch" => {
            no_more(words, &format!("ctl {sub}"))?;
            match sub.as_str() {
                "status" => Ctl::Status,
                "stop-control" => Ctl::StopControl,
                "end" => Ctl::End,
                _ => Ctl::Watch,
            }
        }
        "chat" => {
            let text: Vec<String> = words.collect();
            if text.is_empty() {
                return Err(UsageError("ctl chat needs the text to send".into()));
            }
            Ctl::Chat(text.join(" "))
        }
        "help" => {
            let text: Vec<String> = words.collect();
            if text.first().is_some_and(|w| w == "--withdraw") {
                if text.len() > 1 {
                    return Err(UsageError(
                        "`ctl help --withdraw` takes nothing more".into(),
                    ));
                }
                Ctl::HelpWithdraw
            } else {
                Ctl::Help(text.join(" "))
            }
        }
        "call" => {
            let address = words.next();
            no_more(words, "ctl call HOST[:PORT]")?;
            Ctl::Call(address)
        }
        "rotate" => {
            let degrees = words.next().ok_or_else(|| {
                UsageError("ctl rotate needs the degrees: 0, 90, 180, 270, or auto".into())
            })?;
            no_more(words, "ctl rotate DEGREES")?;
            if degrees == "auto" {
                Ctl::RotateAuto
            } else {
                Ctl::Rotate(degrees.parse().map_err(|_| {
                    UsageError(format!(
                        "ctl rotate: `{degrees}` is not 0, 90, 180, 270 or auto"
                    ))
                })?)
            }
        }
        "invite" => {
            let mut o = Options::parse(
                words,
                "ctl invite",
                &["--expires", "--password-file", "--for"],
                &[],
            )?;
            Ctl::Invite {
                expires: o
                    .value("--expires")
                    .unwrap_or_else(|| DEFAULT_EXPIRES.into()),
                password_file: o.value("--password-file").map(PathBuf::from),
                for_whom: o.value("--for"),
            }
        }
        other => return Err(UsageError(format!("unknown ctl command `{other}`"))),
    })
}

fn no_more(mut words: impl Iterator<Item = String>, command: &str) -> Result<(), UsageError> {
    match words.next() {
        None => Ok(()),
        Some(w) => Err(UsageError(format!("`{command}` takes no argument `{w}`"))),
    }
}

/// `--name VALUE`, `--name=VALUE` and `--flag` options of one command.
struct Options {
    values: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Options {
    fn parse(
        words: impl Iterator<Item = String>,
        command: &str,
        valued: &[&str],
        flags: &[&str],
    ) -> Result<Self, UsageError> {
        let mut o = Options {
            values: Vec::new(),
            flags: Vec::new(),
        };
        let mut words = words.peekable();
        while let Some(w) = words.next() {
            let (name, inline) = match w.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (w.clone(), None),
            };
            if valued.contains(&name.as_str()) {
                let v = match inline {
                    Some(v) => v,
                    None => words
                        .next()
                        .ok_or_else(|| UsageError(format!("{name} needs a value")))?,
                };
                if o.has(&name) {
                    return Err(UsageError(format!("{name} is given twice")));
                }
                o.values.push((name, v));
            } else if flags.contains(&name.as_str()) && inline.is_none() {
                o.flags.push(name);
            } else if name.starts_with('-') {
                let mut known: Vec<&str> = valued.iter().chain(flags).copied().collect();
                known.sort_unstable();
                return Err(UsageError(format!(
                    "`{command}` has no option {name} (it knows {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            } else {
                return Err(UsageError(format!("`{command}` takes no argument `{w}`")));
            }
        }
        Ok(o)
    }

    fn has(&self, name: &str) -> bool {
        self.values.iter().any(|(n, _)| n == name)
    }

    fn value(&mut self, name: &str) -> Option<String> {
        let i = self.values.iter().position(|(n, _)| n == name)?;
        Some(self.values.remove(i).1)
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Cli, UsageError> {
        Cli::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn commands_and_global_config() {
        assert_eq!(
            parse("--config /x.toml run").unwrap(),
            Cli {
                config: Some("/x.toml".into()),
                command: Command::Run
            }
        );
        assert_eq!(
            parse("run --config=/y.toml").unwrap().config,
            Some("/y.toml".into())
        );
        assert_eq!(
            parse("keygen --csr d.csr").unwrap().command,
            Command::Keygen {
                csr: Some("d.csr".into())
            }
        );
        assert_eq!(
            parse("ctl chat hello there").unwrap().command,
            Command::Ctl(Ctl::Chat("hello there".into()))
        );
        assert_eq!(
            parse("ctl stop-control").unwrap().command,
            Command::Ctl(Ctl::StopControl)
        );
        assert_eq!(
            parse("ctl help printer jammed").unwrap().command,
            Command::Ctl(Ctl::Help("printer jammed".into()))
        );
        assert_eq!(
            parse("ctl help --withdraw").unwrap().command,
            Command::Ctl(Ctl::HelpWithdraw)
        );
        assert!(parse("ctl help --withdraw now").is_err());
        assert_eq!(
            parse("ctl rotate 90").unwrap().command,
            Command::Ctl(Ctl::Rotate(90))
        );
        assert_eq!(
            parse("ctl rotate auto").unwrap().command,
            Command::Ctl(Ctl::RotateAuto)
        );
        assert!(parse("ctl rotate sideways").is_err());
        assert!(parse("ctl rotate").is_err());
        assert_eq!(
            parse("doctor").unwrap().command,
            Command::Doctor { json: false }
        );
        assert_eq!(
            parse("doctor --json").unwrap().command,
            Command::Doctor { json: true }
        );
        assert!(parse("doctor --jsn").is_err());
        assert_eq!(parse("run --help").unwrap().command, Command::Help);
        assert_eq!(parse("--version").unwrap().command, Command::Version);
    }

    #[test]
    fn invite_forms() {
        assert_eq!(
            parse("invite --expires=2h --qr --out a.shoulder --for=Ann")
                .unwrap()
                .command,
            Command::Invite(InviteArgs {
                expires: "2h".into(),
                password_file: None,
                for_whom: Some("Ann".into()),
                out: Some("a.shoulder".into()),
                qr: true
            })
        );
        assert_eq!(
            parse("invite").unwrap().command,
            Command::Invite(InviteArgs {
                expires: "30m".into(),
                password_file: None,
                for_whom: None,
                out: None,
                qr: false
            })
        );
        assert_eq!(parse("invite --list").unwrap().command, Command::InviteList);
        assert_eq!(
            parse("invite --revoke 0011223344556677").unwrap().command,
            Command::InviteRevoke {
                id: "0011223344556677".into()
            }
        );
        assert!(parse("invite --list --qr").is_err());
        assert!(parse("invite --list --revoke x").is_err());
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        let e = parse("invite --expire 2h").unwrap_err().to_string();
        assert!(
            e.contains("no option --expire") && e.contains("--expires"),
            "{e}"
        );
        assert!(
            parse("")
                .unwrap_err()
                .to_string()
                .contains("command is missing")
        );
        assert!(
            parse("launch")
                .unwrap_err()
                .to_string()
                .contains("unknown command `launch`")
        );
        assert!(
            parse("run now")
                .unwrap_err()
                .to_string()
                .contains("takes no argument")
        );
        assert!(
            parse("keygen --csr")
                .unwrap_err()
                .to_string()
                .contains("needs a value")
        );
        assert!(
            parse("ctl")
                .unwrap_err()
                .to_string()
                .contains("ctl needs a command")
        );
        assert!(parse("ctl chat").is_err());
        assert!(parse("--config").is_err());
        assert!(
            parse("invite --out a --out b")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
