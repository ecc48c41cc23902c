//! `shoulder-agent`: the device agent's command line.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use shoulder_agent::cli::{Cli, Command, Ctl, InviteArgs, USAGE};
use shoulder_agent::control::{Client, Request};
use shoulder_agent::invites::{InvitationStore, Issuer, advertised_addresses};
use shoulder_agent::util::parse_duration;
use shoulder_agent::{AgentError, Config, config::DEFAULT_CONFIG_PATH, identity};

fn main() -> ExitCode {
    let cli = match Cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoulder-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("shoulder-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    shoulder_agent::log::StderrLog::install();
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    if let Command::Doctor { json } = cli.command {
        return doctor(&path, explicit, json);
    }
    let config = match Config::load(&path, explicit) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let result: Result<(), String> = match cli.command {
        Command::Help | Command::Version | Command::Doctor { .. } => Ok(()),
        Command::Run => run(config).map_err(|e| e.to_string()),
        Command::Keygen { csr } => keygen(&config, csr.as_deref()),
        Command::Fingerprint => identity::load(&config.state_dir)
            .map(|id| println!("{}", id.fingerprint.colon_hex()))
            .map_err(|e| e.to_string()),
        Command::Invite(args) => invite(&config, args),
        Command::InviteList => invite_list(&config),
        Command::InviteRevoke { id } => invite_revoke(&config, &id),
        Command::Ctl(command) => ctl(&config, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `doctor`: a broken config is reported, and the device examined with the
/// defaults. Exit status 1 when a check failed.
fn doctor(path: &Path, explicit: bool, json: bool) -> ExitCode {
    let (config, loaded) = match Config::load(path, explicit) {
        Ok(c) => (c, Ok(())),
        Err(e) => (Config::default(), Err(e.to_string())),
    };
    let report = shoulder_agent::doctor::examine(&config, path, loaded);
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("shoulder-agent: {e}");
    ExitCode::FAILURE
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        // The device has one to four small cores; TLS and argon2 need few.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn run(config: Config) -> Result<(), AgentError> {
    let rt = runtime().map_err(|e| AgentError::Listen {
        addr: ([0, 0, 0, 0], 0).into(),
        source: std::io::Error::other(e),
    })?;
    rt.block_on(async move {
        // Watch the signals before anything starts, so a SIGTERM during
        // start-up is a clean stop too.
        let shutdown = shutdown_signal();
        let listeners = shoulder_agent::bind(&config.listen)?;
        let backends = shoulder_agent::wiring::backends(&config);
        shoulder_agent::run(listeners, config, backends, shutdown).await
    })
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot watch SIGTERM/SIGINT; the agent stops only when killed");
                std::future::pending::<()>().await;
            }
        }
    }
}

fn keygen(config: &Config, csr: Option<&Path>) -> Result<(), String> {
    let name = config.device_name();
    match identity::generate(&config.state_dir, &name, csr) {
        Ok(g) => {
            println!("Device key:         {}", g.key_path.display());
            println!("Device certificate: {}", g.cert_path.display());
            if let Some(c) = &g.csr_path {
                println!(
                    "Signing request:    {} (have the plant CA sign it, then replace device.crt with the result)",
                    c.display()
                );
            }
            println!("SHA-256 fingerprint: {}", g.fingerprint.colon_hex());
            Ok(())
        }
        Err(identity::IdentityError::KeyExists(path)) if csr.is_some() => {
            let out = csr.unwrap_or(Path::new(""));
            identity::csr_for_existing(&config.state_dir, &name, out).map_err(|e| e.to_string())?;
            let id = identity::load(&config.state_dir).map_err(|e| e.to_string())?;
            println!(
                "The device key {} exists; wrote a signing request for it to {}",
                path.display(),
                out.display()
            );
            println!("SHA-256 fingerprint: {}", id.fingerprint.colon_hex());
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn read_password(file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read the password file {}: {e}", f.display()))?;
        let pw = text.lines().next().unwrap_or("").to_string();
        if pw.is_empty() {
            return Err(format!(
                "the password file {} is empty (fix: put the password on its first line)",
                f.display()
            ));
        }
        return Ok(Some(pw));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let pw = prompt_password("Invitation password (empty: generate one): ")
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if pw.is_empty() {
        return Ok(None);
    }
    let again = prompt_password("Repeat the password: ")
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if again != pw {
        return Err("the passwords differ; nothing was created".into());
    }
    Ok(Some(pw))
}

/// Reads a password from the terminal without showing it: the prompt goes
/// to, and the line comes from, `/dev/tty`. The terminal's echo is restored
/// before returning, also when reading fails.
fn prompt_password(prompt: &str) -> std::io::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::{BufRead as _, Write as _};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let shown = tcgetattr(&tty)?;
    let mut hidden = shown.clone();
    hidden.local_modes.remove(LocalModes::ECHO);
    hidden.local_modes.insert(LocalModes::ECHONL);
    (&tty).write_all(prompt.as_bytes())?;
    tcsetattr(&tty, OptionalActions::Flush, &hidden)?;
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let restored = tcsetattr(&tty, OptionalActions::Now, &shown);
    read?;
    restored?;
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}

fn store(config: &Config) -> Result<InvitationStore, String> {
    InvitationStore::new(&config.state_dir, &config.argon2).map_err(|e| e.to_string())
}

fn invite_list(config: &Config) -> Result<(), String> {
    use shoulder_agent::invites::InvitationState as S;
    let list = store(config)?.list().map_err(|e| e.to_string())?;
    if list.is_empty() {
        println!("No invitations.");
    }
    let now = shoulder_agent::util::unix_now();
    for i in list {
        let state = match i.state {
            S::Open if now >= i.expires_unix => "expired".to_string(),
            S::Open => format!(
                "open, {} left",
                shoulder_agent::util::format_duration(Duration::from_secs(i.expires_unix - now))
            ),
            S::Used { .. } => "used".into(),
            S::Revoked { .. } => "revoked".into(),
            S::Burned { .. } => "burned (wrong passwords)".into(),
        };
        println!(
            "{}  expires {}  {}  wrong passwords: {}",
            i.id,
            shoulder_proto::invite::format_utc(i.expires_unix),
            state,
            i.wrong_passwords
        );
    }
    Ok(())
}

fn invite_revoke(config: &Config, id: &str) -> Result<(), String> {
    let id: shoulder_proto::InvitationId = id.parse().map_err(|e| format!("{e}"))?;
    store(config)?
        .revoke(id, shoulder_agent::util::unix_now())
        .map_err(|e| e.to_string())?;
    println!("Invitation {id} revoked.");
    Ok(())
}

fn invite(config: &Config, args: InviteArgs) -> Result<(), String> {
    let store = store(config)?;
    let lifetime = parse_duration(&args.expires).map_err(|e| format!("--expires: {e}"))?;
    let password = read_password(args.password_file.as_deref())?;
    let name = config.device_name();
    let (id, _) = identity::ensure(&config.state_dir, &name).map_err(|e| e.to_string())?;
    let issuer = Issuer {
        store,
        device_name: name,
        addresses: advertised_addresses(&config.advertise, &config.listen),
        port: config
            .listen
            .first()
            .map_or(shoulder_proto::DEFAULT_PORT, |a| a.port()),
        fingerprint: id.fingerprint,
        max_lifetime: config.max_invitation_lifetime,
        broker: shoulder_agent::service::invitation_route(config, &id),
    };
    let issued = issuer
        .issue(lifetime, password.as_deref(), args.for_whom.as_deref())
        .map_err(|e| e.to_string())?;
    let inv = &issued.invitation;
    if let Some(out) = &args.out {
        shoulder_agent::fsutil::write_atomic(out, inv.to_file().as_bytes(), 0o644)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        eprintln!("Invitation file written to {}", out.display());
    }
    print_invitation(inv, issued.generated_password.as_deref(), args.qr);
    if !config.enabled || !config.allow_invitations {
        eprintln!(
            "Note: this device does not accept invitations now (enabled = {}, allow_invitations = {}).",
            config.enabled, config.allow_invitations
        );
    }
    Ok(())
}

fn print_invitation(inv: &shoulder_proto::invite::Invitation, password: Option<&str>, qr: bool) {
    println!(
        "Invitation {} for \"{}\", expires {}",
        inv.id,
        inv.device_name,
        shoulder_proto::invite::format_utc(inv.expires_unix)
    );
    println!("{}", inv.to_text());
    if let Some(pw) = password {
        println!("Password (give it separately): {pw}");
    }
    if qr {
        match qrcode::QrCode::new(inv.to_text().as_bytes()) {
            Ok(code) => {
                let image = code
                    .render::<qrcode::render::unicode::Dense1x2>()
                    .dark_color(qrcode::render::unicode::Dense1x2::Light)
                    .light_color(qrcode::render::unicode::Dense1x2::Dark)
                    .build();
                println!("{image}");
            }
            Err(e) => eprintln!("cannot make a QR code: {e}"),
        }
    }
}

fn ctl(config: &Config, command: Ctl) -> Result<(), String> {
    let rt = runtime()?;
    rt.block_on(async {
        let mut client = Client::connect(&config.control_socket)
            .await
            .map_err(|e| e.to_string())?;
        let req = match command {
            Ctl::Status => Request::Status,
            Ctl::Accept(prompt) => Request::Accept { prompt },
            Ctl::Decline(prompt) => Request::Decline { prompt },
            Ctl::StopControl => Request::StopControl,
            Ctl::End => Request::End,
            Ctl::Chat(text) => Request::Chat { text },
            Ctl::Help(text) => Request::Help { text },
            Ctl::HelpWithdraw => Request::HelpWithdraw,
            Ctl::Call(address) => Request::Call { address },
            Ctl::Rotate(degrees) => Request::Rotate { degrees },
            Ctl::RotateAuto => Request::RotateAuto,
            Ctl::Invite {
                expires,
                password_file,
                for_whom,
            } => Request::Invite {
                expires,
                password: read_password(password_file.as_deref())?,
                for_whom,
            },
            Ctl::Watch => loop {
                let e = client.next_event().await.map_err(|e| e.to_string())?;
                println!("{e}");
            },
        };
        let reply = client.request(&req).await.map_err(|e| e.to_string())?;
        if reply["ok"] != true {
            return Err(reply["error"]
                .as_str()
                .unwrap_or("the agent refused")
                .to_string());
        }
        match req {
            Request::Invite { .. } => {
                if let Some(t) = reply["text"].as_str()
                    && let Ok(inv) = shoulder_proto::invite::Invitation::from_text(t)
                {
                    print_invitation(&inv, reply["password"].as_str(), false);
                }
            }
            _ => println!(
                "{}",
                serde_json::to_string_pretty(&reply).unwrap_or_default()
            ),
        }
        Ok(())
    })
}
