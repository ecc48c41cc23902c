//! The `shoulder` command line.
//!
//! `offer` and `open` start the GUI connected; `snapshot`, `watch` and `chat`
//! run without a window; `pki` makes the plant CA and certificates. Every
//! failure ends with one sentence on stderr and exit status 1.

use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use shoulder_proto::msg::TypeOutcome;
use shoulder_proto::session::{ControlState, ExpertState, UserAction};
use shoulder_proto::{Fingerprint, PROTOCOL_VERSION};
use tokio::sync::mpsc;

use crate::client::broker::BrokerRoute;
use crate::client::{self, ACTION_QUEUE, ClientEvent, ConnectOptions, SharedView};
use crate::error::ClientError;
use crate::gui::GuiStart;
use crate::identity::{self, DEFAULT_CERT_DAYS, Identity};
use crate::printable::printable;
use crate::screens::{Next, ScreenChoice};
use crate::target::Target;
use crate::trust::AcceptNew;

/// Longest password file we read: a password is at most 128 bytes.
const MAX_PASSWORD_FILE: u64 = 4096;
/// How long `snapshot` waits for the first frame once viewing: a capture
/// takes milliseconds, so this only fires when the screen is unavailable.
const SNAPSHOT_FRAME_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest CSR we read.
const MAX_CSR_LEN: u64 = 64 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "shoulder",
    about = "Over-the-shoulder remote assistance: see and help at a Linux kiosk.",
    after_help = "Without a command, the desktop app opens on its start screen.\n\nDevice addresses are pinned: the first connection remembers the device's certificate in known_devices (config directory), also when your plant CA signed it, and a different certificate at that address is refused."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offer help to a device that trusts your plant certificate (opens the app).
    ///
    /// The device's certificate must chain to the plant CA of your identity
    /// (its ca.crt) and is pinned to the address you typed: the first
    /// connection remembers it in known_devices, and any other certificate at
    /// that address is refused, even one the plant CA signed, because the CA
    /// signs every kiosk. Without a plant CA the first connection asks (or
    /// takes --accept-new).
    Offer {
        /// The device: host, host:port or [ipv6]:port (port 7575 by default).
        device: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Open an invitation file or text made on the device (opens the app).
    Open {
        /// The invitation: a *.shoulder file or its SHOULDER1-… text.
        invitation: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Save one frame of the device screen as PNG, without a window.
    Snapshot {
        /// A device address (offer) or an invitation file or text.
        target: String,
        /// Where to write the PNG.
        #[arg(short = 'o', long = "output", value_name = "FILE.png")]
        output: PathBuf,
        /// Which of the device's screens (1, 2, …; default: the first).
        #[arg(long, value_name = "N")]
        screen: Option<u8>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Watch the screen without a window, writing one JSON line per update.
    Watch {
        /// A device address (offer) or an invitation file or text.
        target: String,
        /// JSON lines: t_mono_us, bytes, rects, fb_hash (see the docs).
        #[arg(long, value_name = "FILE")]
        stats_json: PathBuf,
        /// Stop after this many updates.
        #[arg(long, value_name = "N")]
        frames: Option<u64>,
        /// Stop after this many seconds of viewing (e.g. 10, 2.5).
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Which of the device's screens (1, 2, …; default: the first).
        #[arg(long, value_name = "N")]
        screen: Option<u8>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Send one chat line to the person at the device.
    Chat {
        /// A device address (offer) or an invitation file or text.
        target: String,
        /// The line to send.
        text: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Have the device type a text for the person at it (a password, a
    /// serial number, a few lines): asks for control, types it with the
    /// device's keyboard layout, gives control back.
    ///
    /// The text comes from the argument, or from standard input when it is
    /// `-` or left out (a file: `shoulder type DEVICE - < notes.txt`). Nothing
    /// is typed when the device's layout has no key for a character: the
    /// command names them.
    Type {
        /// A device address (offer) or an invitation file or text.
        target: String,
        /// The text ("-" or none: standard input).
        text: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Copy a file from the device (from a directory its agent.toml lets
    /// you read, `[files] readable`): the person at the device is asked.
    /// LOCAL may be a directory; an existing file is never overwritten.
    Get {
        /// A device address (offer) or an invitation file or text.
        target: String,
        /// The file on the device, e.g. /var/log/kiosk/kiosk.log.
        remote: String,
        /// Where to put it (a file name or a directory).
        local: PathBuf,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Send a file to the device (into its drop directory, `[files] drop`):
    /// the person at the device is asked; it is kept only once complete
    /// and its SHA-256 checked.
    Put {
        /// A device address (offer) or an invitation file or text.
        target: String,
        /// The file to send.
        local: PathBuf,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List what the device lets you copy (`[files] readable`): without
    /// DIR, which directories; with one, what it holds. The person at the
    /// device is asked to let you see the screen, not about the listing.
    Ls {
        /// A device address (offer) or an invitation file or text.
        target: String,
        /// A directory on the device (below a readable one).
        dir: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Wait for a device to call you (the device runs `shoulder-agent ctl
    /// call YOUR-HOST[:PORT]`): for devices you cannot reach and that have
    /// no broker (opens the app).
    ///
    /// The device dials out; inside TLS nothing changes: the device's
    /// certificate is checked (against your plant CA, or --pin), you are
    /// authenticated by yours, and the person at the device is asked
    /// first. After a drop the device calls again and the session resumes.
    Listen {
        /// The port to listen on (7576 by default).
        #[arg(default_value_t = 7576)]
        port: u16,
        /// The address to listen on (default: all).
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
        /// Only this device: its certificate's SHA-256 fingerprint.
        #[arg(long, value_name = "FINGERPRINT")]
        pin: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List the devices known to the plant's broker (their presence).
    Devices {
        /// Only devices whose name or site contains this (any case).
        filter: Option<String>,
        /// Only devices that are online now.
        #[arg(long)]
        online: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Show the list in the app, to pick a device and offer help.
        #[arg(long, conflicts_with = "json")]
        window: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List the devices whose person asked for help (`ctl help` on the
    /// device), through the plant's broker; take one with `shoulder offer
    /// DEVICE --broker …`.
    HelpRequests {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Plant PKI: CA, expert identities, device certificates.
    #[command(subcommand)]
    Pki(Pki),
    /// Check a session record a device wrote (`[record]` in its
    /// agent.toml) against the device's certificate: every chunk's hash,
    /// their order and the device's signature over the whole. Exits 1 and
    /// names each changed, removed or cut part if anything is wrong.
    Verify {
        /// The record (*.shrec, from the device's records directory).
        record: PathBuf,
        /// The device's certificate (device.crt in its state directory, or
        /// the one `shoulder pki sign-device` issued).
        #[arg(long = "device-cert", value_name = "CRT")]
        device_cert: PathBuf,
    },
    /// Replay a session record: in a window with a timeline, or with --png
    /// as pictures of the screen and a list of what happened.
    Play {
        /// The record (*.shrec).
        record: PathBuf,
        /// Write the screen as PNG files into this directory instead of
        /// opening a window, and list the session's events.
        #[arg(long, value_name = "DIR")]
        png: Option<PathBuf>,
        /// With --png: at most one picture per this many milliseconds of
        /// the session (0: every screen update; the last is always written).
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        every_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum Pki {
    /// Create the plant CA (ca.crt, ca.key) in DIR.
    InitCa {
        dir: PathBuf,
        /// The CA's name.
        #[arg(long, default_value = "Shoulder plant CA")]
        name: String,
    },
    /// Issue an expert identity signed by the plant CA.
    IssueExpert {
        /// The plant CA directory.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The expert's name (shown on the device).
        #[arg(long)]
        name: String,
        /// Where to write expert.crt, expert.key and ca.crt (default: the
        /// identities folder of the config directory).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = DEFAULT_CERT_DAYS)]
        days: u32,
    },
    /// Sign a device's certificate request with the plant CA.
    SignDevice {
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The device's CSR (PEM).
        csr: PathBuf,
        /// Where to write the certificate (default: the CSR path with .crt).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = DEFAULT_CERT_DAYS)]
        days: u32,
    },
}

/// How to authenticate and trust, shared by every connecting command.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnArgs {
    /// Invitation password, first line of this file.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Expert identity: a directory with expert.crt/expert.key, or the name
    /// of one in the config directory.
    #[arg(long, value_name = "DIR|NAME")]
    pub identity: Option<String>,
    /// Trust a device seen for the first time (no plant CA) and remember it.
    #[arg(long)]
    pub accept_new: bool,
    /// The name the device's prompt shows as a hint (your certificate's
    /// name counts for offers).
    #[arg(long)]
    pub name: Option<String>,
    /// Every update exact: no lossy pictures, even on a slow link (they
    /// are otherwise sent for photographs and video when the link is
    /// slow, and made exact once still).
    #[arg(long)]
    pub lossless: bool,
    /// Reach the device through the plant's MQTT broker at HOST[:PORT]
    /// (8883 by default); the device is then named as the broker knows it
    /// (its certificate's name), e.g. `shoulder offer kiosk-12 --broker
    /// broker.plant:8883`.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub broker: Option<String>,
    /// CA certificate(s) (PEM) of the broker; default: your plant CA.
    #[arg(long, value_name = "FILE", requires = "broker")]
    pub broker_ca: Option<PathBuf>,
    /// Topic prefix the plant's devices use (their `[broker] prefix`).
    #[arg(long, value_name = "PREFIX", default_value = "shoulder")]
    pub broker_prefix: String,
}

/// The broker route `conn` names, if any.
fn broker_route(conn: &ConnArgs) -> Result<Option<BrokerRoute>, ClientError> {
    let Some(address) = &conn.broker else {
        return Ok(None);
    };
    let mut route = BrokerRoute::parse(address)?;
    route.ca = conn.broker_ca.clone();
    route.prefix = conn.broker_prefix.clone();
    Ok(Some(route))
}

/// `shoulder 0.1.0 (protocol 1)`.
pub fn version_string() -> String {
    format!(
        "{} (protocol {PROTOCOL_VERSION})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    // Diagnostics (RUST_LOG, default warnings) on stderr; the last line of a
    // failure is always the sentence.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // winit warns about harmless display quirks (Xvfb, XSETTINGS).
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,winit=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let version: &'static str = Box::leak(version_string().into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            // Sentences may carry what a device said (a Bye detail, a reason).
            eprintln!("{}", printable(&e.sentence()));
            1
        }
    }
}

fn run(cli: Cli) -> Result<(), ClientError> {
    match cli.command {
        None => gui(GuiStart::StartScreen),
        Some(Command::Offer { device, conn }) => {
            let target = Target::parse(&device)?;
            let opts = options(target, &conn, false)?;
            gui(GuiStart::Connect {
                opts: Box::new(opts),
                needs_password: false,
            })
        }
        Some(Command::Open { invitation, conn }) => {
            let target = Target::parse(&invitation)?;
            if !matches!(target, Target::Invitation(_)) {
                return Err(ClientError::Local(format!(
                    "{invitation} is not an invitation — use `shoulder offer {invitation}` for a device address."
                )));
            }
            let password = match &conn.password_file {
                Some(p) => Some(read_password_file(p)?),
                None => None,
            };
            let mut opts = options(
                target,
                &ConnArgs {
                    password_file: None,
                    ..conn
                },
                false,
            )?;
            let needs_password = password.is_none();
            opts.password = password;
            gui(GuiStart::Connect {
                opts: Box::new(opts),
                needs_password,
            })
        }
        Some(Command::Snapshot {
            target,
            output,
            screen,
            conn,
        }) => ScreenChoice::new(screen).and_then(|c| snapshot(&target, &output, c, &conn)),
        Some(Command::Watch {
            target,
            stats_json,
            frames,
            duration,
            screen,
            conn,
        }) => ScreenChoice::new(screen)
            .and_then(|c| watch(&target, &stats_json, frames, duration, c, &conn)),
        Some(Command::Chat { target, text, conn }) => chat(&target, &text, &conn),
        Some(Command::Type { target, text, conn }) => type_text(&target, text, &conn),
        Some(Command::Get {
            target,
            remote,
            local,
            conn,
        }) => transfer(&target, Transfer::Get(remote, local), &conn),
        Some(Command::Put {
            target,
            local,
            conn,
        }) => transfer(&target, Transfer::Put(local), &conn),
        Some(Command::Ls { target, dir, conn }) => {
            list(&target, dir.as_deref().unwrap_or(""), &conn)
        }
        Some(Command::Devices {
            window: true, conn, ..
        }) => {
            let Some(route) = broker_route(&conn)? else {
                return Err(ClientError::Local(
                    "The device list comes from the plant's broker — pass --broker HOST[:PORT]."
                        .into(),
                ));
            };
            let identity = match conn.identity {
                Some(i) => i,
                None => identity::list_identities()
                    .first()
                    .cloned()
                    .unwrap_or_default(),
            };
            gui(GuiStart::Devices { route, identity })
        }
        Some(Command::Devices {
            filter,
            online,
            json,
            conn,
            ..
        }) => devices(filter.as_deref(), online, json, &conn),
        Some(Command::HelpRequests { json, conn }) => help_requests(json, &conn),
        Some(Command::Listen {
            port,
            bind,
            pin,
            conn,
        }) => {
            let mut listen = client::Listen::bind(std::net::SocketAddr::new(bind, port))?;
            if let Some(p) = pin {
                listen.pin = Some(shoulder_proto::Fingerprint::parse(&p).ok_or_else(|| {
                    ClientError::Local(format!(
                        "\"{p}\" is not a certificate fingerprint — copy it as the device shows it (64 hex digits, colons allowed)."
                    ))
                })?);
            }
            let mut opts = options(
                Target::Offer {
                    host: "a device calling in".into(),
                    port,
                },
                &conn,
                false,
            )?;
            opts.broker = None;
            opts.listen = Some(listen);
            gui(GuiStart::Connect {
                opts: Box::new(opts),
                needs_password: false,
            })
        }
        Some(Command::Pki(p)) => pki(p),
        Some(Command::Verify {
            record,
            device_cert,
        }) => {
            println!("{}", crate::record::verify_file(&record, &device_cert)?);
            Ok(())
        }
        Some(Command::Play {
            record,
            png: Some(dir),
            every_ms,
        }) => crate::record::export(&record, &dir, every_ms, &mut std::io::stdout().lock())
            .map(|_| ()),
        Some(Command::Play {
            record, png: None, ..
        }) => {
            let file = crate::record::read(&record)?;
            crate::gui::play(record, file).map_err(ClientError::Local)
        }
    }
}

fn gui(start: GuiStart) -> Result<(), ClientError> {
    crate::gui::run(start).map_err(ClientError::Local)
}

fn read_password_file(path: &Path) -> Result<String, ClientError> {
    let len = std::fs::metadata(path)
        .map_err(|e| ClientError::Local(format!("Cannot read {}: {e}.", path.display())))?
        .len();
    if len > MAX_PASSWORD_FILE {
        return Err(ClientError::Local(format!(
            "{} is too large to be a password file.",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Local(format!("Cannot read {}: {e}.", path.display())))?;
    Ok(text
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_string())
}

/// Builds connect options from the command line. `headless` asks for a
/// missing password on the terminal.
pub fn options(
    target: Target,
    conn: &ConnArgs,
    headless: bool,
) -> Result<ConnectOptions, ClientError> {
    let identity = match (&conn.identity, &target) {
        (Some(arg), _) => Some(Arc::new(Identity::load(&identity::resolve_identity(arg)?)?)),
        (None, Target::Offer { .. }) => {
            let ids = identity::list_identities();
            match ids.as_slice() {
                [one] => Some(Arc::new(Identity::load(
                    &identity::identities_dir()?.join(one),
                )?)),
                [] => {
                    return Err(ClientError::Local(
                        "Offers need your expert identity — pass --identity DIR, or create one with `shoulder pki issue-expert`.".into(),
                    ));
                }
                many => {
                    return Err(ClientError::Local(format!(
                        "Several identities exist ({}) — choose one with --identity NAME.",
                        many.join(", ")
                    )));
                }
            }
        }
        // An invitation that names a broker route uses the identity, if
        // there is exactly one, for the broker.
        (None, Target::Invitation(inv)) if inv.broker.is_some() => {
            match identity::list_identities().as_slice() {
                [one] => identity::identities_dir()
                    .ok()
                    .and_then(|d| Identity::load(&d.join(one)).ok())
                    .map(Arc::new),
                _ => None,
            }
        }
        (None, Target::Invitation(_)) => None,
    };
    let password = match (&target, &conn.password_file) {
        (Target::Invitation(_), Some(p)) => Some(read_password_file(p)?),
        (Target::Invitation(_), None) if headless => {
            if std::io::stdin().is_terminal() {
                let pw = rpassword::prompt_password("Invitation password: ")
                    .map_err(|e| ClientError::Local(format!("Cannot read the password: {e}.")))?;
                Some(pw)
            } else {
                return Err(ClientError::Local(
                    "This invitation needs its password — pass --password-file FILE.".into(),
                ));
            }
        }
        _ => None,
    };
    let broker = broker_route(conn)?;
    if broker.is_some() && matches!(target, Target::Invitation(_)) && conn.broker_ca.is_none() {
        return Err(ClientError::Local(
            "--broker is for offers: an invitation names its own route through the broker (--broker-ca may still name the broker's CA).".into(),
        ));
    }
    let name = conn
        .name
        .clone()
        .or_else(|| identity.as_ref().map(|i| i.name.clone()))
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "expert".into());
    Ok(ConnectOptions {
        target,
        password,
        identity,
        accept_new: if conn.accept_new {
            AcceptNew::Any
        } else {
            AcceptNew::Ask
        },
        known_hosts: None,
        name,
        lossless: conn.lossless,
        broker,
        listen: None,
    })
}

/// How a headless session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The session ended on its own or by the command's own choice.
    Done,
    /// SIGINT (Ctrl+C) or SIGTERM: the goodbye was sent and the device
    /// freed its session at once.
    Interrupted(&'static str),
}

/// How long an interrupted session may take to say goodbye before the
/// command stops without waiting (a second signal stops at once).
const GOODBYE_GRACE: Duration = Duration::from_secs(5);

/// A headless session: `on_event` sees every event as it happens (in the
/// driver, so the framebuffer is exactly as that event left it) and may
/// queue actions. SIGINT or SIGTERM ends it cleanly: the device hears
/// goodbye and frees its session at once, instead of keeping it for the
/// resume grace period and telling the next expert it is busy.
fn headless<F>(opts: ConnectOptions, on_event: F) -> Result<Ended, ClientError>
where
    F: FnMut(&ClientEvent, &SharedView, &mpsc::Sender<UserAction>) + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Local(format!("Cannot start the network runtime: {e}.")))?;
    let on_event = Arc::new(std::sync::Mutex::new(on_event));
    let mut opts = opts;
    loop {
        let view = SharedView::default();
        let (tx, rx) = mpsc::channel(ACTION_QUEUE);
        let signal_tx = tx.clone();
        let (v2, f) = (view.clone(), on_event.clone());
        let emit = Box::new(move |e: ClientEvent| {
            progress(&e);
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            (f)(&e, &v2, &tx);
        });
        let (end, ended) = rt.block_on(async {
            let session = client::run(opts.clone(), view, rx, emit);
            tokio::pin!(session);
            let signal = tokio::select! {
                end = &mut session => return (end, Ended::Done),
                s = interrupted() => s,
            };
            eprintln!("{signal}: ending the session…");
            // A session still connecting reads it once connected (and says
            // goodbye at once); one that never connects meets the grace.
            let _ = signal_tx.try_send(UserAction::Disconnect);
            tokio::select! {
                end = &mut session => (end, Ended::Interrupted(signal)),
                again = interrupted() => (
                    Some(ClientError::Local(format!(
                        "{again} again: stopped without waiting for the goodbye."
                    ))),
                    Ended::Interrupted(signal),
                ),
                _ = tokio::time::sleep(GOODBYE_GRACE) => (
                    Some(ClientError::Local(format!(
                        "The session did not end within {} s of {signal}: stopped.",
                        GOODBYE_GRACE.as_secs()
                    ))),
                    Ended::Interrupted(signal),
                ),
            }
        });
        match end {
            Some(ClientError::UnknownDevice { host, got })
                if ended == Ended::Done && std::io::stdin().is_terminal() =>
            {
                if confirm_new_device(&host, got)? {
                    opts.accept_new = AcceptNew::Only(got);
                    continue;
                }
                return Err(ClientError::Local(
                    "Not connected: the device was not confirmed.".into(),
                ));
            }
            Some(e) => return Err(e),
            None => return Ok(ended),
        }
    }
}

/// Waits for SIGINT (Ctrl+C) or, on Unix, SIGTERM; names the one that came.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "Interrupted",
                _ = term.recv() => "Terminated",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "Interrupted"
            }
        }
    }
    #[cfg(not(unix))]
    {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Interrupted",
            // No way to hear Ctrl+C: never interrupted this way.
            Err(_) => std::future::pending().await,
        }
    }
}

fn confirm_new_device(host: &str, fp: Fingerprint) -> Result<bool, ClientError> {
    eprintln!("The device at {host} is not known yet. Its certificate fingerprint is");
    eprintln!("  {fp}");
    eprint!("Compare it with the fingerprint shown on the device. Trust it? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| ClientError::Local(format!("Cannot read the answer: {e}.")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// Progress lines on stderr, so stdout stays clean for data. Whatever the
/// device wrote goes through [`printable`] first.
fn progress(e: &ClientEvent) {
    match e {
        ClientEvent::Connecting(a) => eprintln!("Connecting to {a}…"),
        ClientEvent::Connected {
            device_name,
            fingerprint,
        } => eprintln!("Connected to {} ({fingerprint}).", printable(device_name)),
        ClientEvent::State(ExpertState::WaitingForConsent { deadline }) => {
            let secs = deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_secs();
            eprintln!("Waiting for the person at the device to accept (up to {secs} s)…");
        }
        ClientEvent::State(ExpertState::Viewing { .. }) => {}
        ClientEvent::Recorded => eprintln!(
            "This device records its sessions: the screen or what you do in it is kept on the device, signed."
        ),
        ClientEvent::ScreenUnavailable(s) => {
            eprintln!("The screen is not available: {}", printable(s))
        }
        ClientEvent::Chat(t) => eprintln!("Device says: {}", printable(t)),
        ClientEvent::ControlDeclined(s) | ClientEvent::ControlEnded(s) => {
            eprintln!("{}", printable(s))
        }
        ClientEvent::Reconnecting {
            attempt,
            until,
            last_error,
        } => {
            let left = until
                .saturating_duration_since(std::time::Instant::now())
                .as_secs();
            match (attempt, last_error) {
                (1, Some(why)) => {
                    eprintln!("{}", printable(why));
                    eprintln!("Reconnecting (the device keeps the session for {left} s)…");
                }
                (1, None) => {
                    eprintln!("Reconnecting (the device keeps the session for {left} s)…")
                }
                _ => eprintln!("Still reconnecting ({left} s left)…"),
            }
        }
        ClientEvent::Resuming => eprintln!("Reconnected; resuming the session…"),
        ClientEvent::Screens(list) => eprintln!(
            "The device has {} screens: {}.",
            list.screens.len(),
            crate::screens::describe(list)
        ),
        _ => {}
    }
}

/// Follows `--screen`: asks the device for the wanted screen when it lists
/// another, and says whether frames now are the wanted screen's (`Some`
/// when that changed). A screen that does not exist ends the session with
/// the error in `failed`.
fn follow_choice(
    e: &ClientEvent,
    choice: &mut ScreenChoice,
    tx: &mpsc::Sender<UserAction>,
    failed: &std::sync::Mutex<Option<ClientError>>,
) -> Option<bool> {
    let fail = |e: ClientError| {
        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        let _ = tx.try_send(UserAction::Disconnect);
    };
    match e {
        ClientEvent::Screens(list) => match choice.list(list) {
            Next::Wait => None,
            Next::Select(i) => {
                let _ = tx.try_send(UserAction::SelectScreen(i));
                Some(false)
            }
            Next::Fail(e) => {
                fail(e);
                Some(false)
            }
        },
        ClientEvent::Screen(_) => match choice.screen() {
            Ok(on) => Some(on),
            Err(e) => {
                fail(e);
                Some(false)
            }
        },
        _ => None,
    }
}

fn snapshot(
    target: &str,
    output: &Path,
    mut choice: ScreenChoice,
    conn: &ConnArgs,
) -> Result<(), ClientError> {
    let mut opts = options(Target::parse(target)?, conn, true)?;
    // A snapshot is a record of the screen: exact pixels only.
    opts.lossless = true;
    let output = output.to_owned();
    let saved = Arc::new(std::sync::Mutex::new(None::<Result<(), ClientError>>));
    let saved2 = saved.clone();
    let unavailable = Arc::new(std::sync::Mutex::new(None::<String>));
    let unavailable2 = unavailable.clone();
    let mut screen = false;
    let mut timer = false;
    let failed = Arc::new(std::sync::Mutex::new(None::<ClientError>));
    let failed2 = failed.clone();
    let ended = headless(opts, move |e, view, tx| match e {
        ClientEvent::Screens(_) | ClientEvent::Screen(_) => {
            if let Some(on) = follow_choice(e, &mut choice, tx, &failed2) {
                screen = on;
            }
        }
        ClientEvent::State(ExpertState::Viewing { .. }) if !timer => {
            // A screen that cannot be captured would otherwise keep us
            // waiting as long as the device answers keepalives.
            timer = true;
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SNAPSHOT_FRAME_TIMEOUT).await;
                let _ = tx.send(UserAction::Disconnect).await;
            });
        }
        ClientEvent::ScreenUnavailable(s) => {
            *unavailable2.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        }
        ClientEvent::UpdateApplied { .. } if screen => {
            let mut slot = saved2.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                let v = view.lock();
                if let Some(fb) = &v.fb {
                    *slot = Some(client::save_png(fb, &output));
                    let _ = tx.try_send(UserAction::Disconnect);
                }
            }
        }
        _ => {}
    })?;
    if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let result = saved.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (result, ended) {
        (Some(r), _) => r,
        (None, Ended::Interrupted(signal)) => Err(ClientError::Local(format!(
            "{signal} before the first frame arrived: no snapshot was written."
        ))),
        (None, Ended::Done) => {
            let why = unavailable.lock().unwrap_or_else(|p| p.into_inner()).take();
            Err(ClientError::Local(match why {
                Some(w) => format!(
                    "The device could not show its screen ({w}) — check its display and try again."
                ),
                None => format!(
                    "The device sent no frame within {} s — check its display and try again.",
                    SNAPSHOT_FRAME_TIMEOUT.as_secs()
                ),
            }))
        }
    }
}

fn watch(
    target: &str,
    stats: &Path,
    frames: Option<u64>,
    duration: Option<f64>,
    mut choice: ScreenChoice,
    conn: &ConnArgs,
) -> Result<(), ClientError> {
    let opts = options(Target::parse(target)?, conn, true)?;
    let duration = match duration {
        Some(d) if d.is_finite() && d > 0.0 && d < 1e9 => Some(Duration::from_secs_f64(d)),
        Some(d) => {
            return Err(ClientError::Local(format!(
                "--duration {d} is not a number of seconds above zero."
            )));
        }
        None => None,
    };
    let file = std::fs::File::create(stats)
        .map_err(|e| ClientError::Local(format!("Cannot write {}: {e}.", stats.display())))?;
    let out = Arc::new(std::sync::Mutex::new(BufWriter::new(file)));
    let out2 = out.clone();
    let stats_path = stats.to_owned();
    let mut count = 0u64;
    let mut stop_at: Option<std::time::Instant> = None;
    let write_error = Arc::new(std::sync::Mutex::new(None::<ClientError>));
    let we2 = write_error.clone();
    // Interrupting is how a watch without --frames or --duration stops: the
    // stats written so far are the result.
    let mut on_screen = false;
    let we3 = write_error.clone();
    let _ended = headless(opts, move |e, view, tx| match e {
        ClientEvent::Screens(_) | ClientEvent::Screen(_) => {
            if let Some(on) = follow_choice(e, &mut choice, tx, &we3) {
                on_screen = on;
            }
        }
        ClientEvent::State(ExpertState::Viewing { .. }) if stop_at.is_none() => {
            if let Some(d) = duration {
                stop_at = Some(std::time::Instant::now() + d);
                let tx = tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send(UserAction::Disconnect).await;
                });
            }
        }
        ClientEvent::UpdateApplied {
            bytes,
            rects,
            t_mono_us,
            t_recv_us,
            ..
        } if on_screen => {
            let hash = view.lock().fb.as_ref().map(client::fb_hash);
            let Some(hash) = hash else { return };
            count += 1;
            let mut w = out2.lock().unwrap_or_else(|p| p.into_inner());
            let line = format!(
                "{{\"t_mono_us\":{t_mono_us},\"t_recv_us\":{t_recv_us},\"bytes\":{bytes},\"rects\":{rects},\"fb_hash\":\"{hash}\"}}"
            );
            if let Err(err) = writeln!(w, "{line}").and_then(|()| w.flush()) {
                *we2.lock().unwrap_or_else(|p| p.into_inner()) = Some(ClientError::Local(format!(
                    "Cannot write {}: {err}.",
                    stats_path.display()
                )));
                let _ = tx.try_send(UserAction::Disconnect);
            }
            if frames.is_some_and(|n| count >= n) {
                let _ = tx.try_send(UserAction::Disconnect);
            }
        }
        ClientEvent::ViewChecked {
            compared,
            differing,
            ..
        } if *differing > 0 => {
            eprintln!(
                "view repaired: {differing} of {compared} strips differed from the device screen and were sent again"
            );
        }
        _ => {}
    })?;
    if let Some(e) = write_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    out.lock()
        .unwrap_or_else(|p| p.into_inner())
        .flush()
        .map_err(|e| ClientError::Local(format!("Cannot write {}: {e}.", stats.display())))
}

/// The broker route and identity of a command reading the device list.
fn directory_of(conn: &ConnArgs) -> Result<(BrokerRoute, shoulder_broker::Directory), ClientError> {
    let Some(route) = broker_route(conn)? else {
        return Err(ClientError::Local(
            "The device list comes from the plant's broker — pass --broker HOST[:PORT].".into(),
        ));
    };
    let opts = options(
        Target::Offer {
            host: "directory".into(),
            port: shoulder_proto::DEFAULT_PORT,
        },
        conn,
        true,
    )?;
    let identity = opts.identity.clone().ok_or_else(|| {
        ClientError::Local("The broker needs your expert identity — pass --identity DIR.".into())
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Local(format!("Cannot start: {e}.")))?;
    let found = rt.block_on(crate::client::broker::read_directory(&route, &identity))?;
    Ok((route, found))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `shoulder devices`: the presence records the broker keeps.
fn devices(
    filter: Option<&str>,
    online_only: bool,
    json: bool,
    conn: &ConnArgs,
) -> Result<(), ClientError> {
    let (route, found) = directory_of(conn)?;
    let needle = filter.map(str::to_lowercase);
    let mut out = String::new();
    let mut shown = 0;
    for (device, p) in &found.devices {
        if online_only && !p.online {
            continue;
        }
        if let Some(n) = &needle
            && ![device, &p.name, &p.site]
                .iter()
                .any(|s| s.to_lowercase().contains(n.as_str()))
        {
            continue;
        }
        shown += 1;
        let help = found.help.get(device);
        if json {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            v["device"] = serde_json::Value::String(device.clone());
            if let Some(h) = help {
                v["help"] = serde_json::to_value(h).unwrap_or_default();
            }
            out.push_str(&v.to_string());
            out.push('\n');
        } else {
            let allows: Vec<&str> = [
                (p.offers, "offers"),
                (p.invitations, "invitations"),
                (p.control, "control"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| *w)
            .collect();
            out.push_str(&format!(
                "{:<24} {:<8} {:<16} {:<10} {:<28} {}\n",
                printable(device),
                if p.online { "online" } else { "offline" },
                printable(&p.site),
                printable(&p.version),
                allows.join(","),
                if help.is_some() { "asks for help" } else { "" },
            ));
        }
    }
    if !json {
        if shown == 0 {
            eprintln!(
                "No devices{} at the broker {}.",
                if found.devices.is_empty() {
                    ""
                } else {
                    " match"
                },
                route.label()
            );
            return Ok(());
        }
        println!(
            "{:<24} {:<8} {:<16} {:<10} {:<28} HELP",
            "DEVICE", "STATE", "SITE", "VERSION", "ALLOWS"
        );
    }
    print!("{out}");
    Ok(())
}

/// `shoulder help-requests`: the devices whose person asked for help,
/// oldest first.
fn help_requests(json: bool, conn: &ConnArgs) -> Result<(), ClientError> {
    let (route, found) = directory_of(conn)?;
    let mut asks: Vec<_> = found.help.iter().collect();
    asks.sort_by_key(|(_, h)| h.asked_unix);
    let now = unix_now();
    if asks.is_empty() && !json {
        eprintln!("Nobody is asking for help at the broker {}.", route.label());
        return Ok(());
    }
    if !json {
        println!(
            "{:<24} {:<8} {:<16} {:<14} TEXT",
            "DEVICE", "STATE", "SITE", "ASKED"
        );
    }
    for (device, h) in asks {
        let p = found.devices.get(device);
        let online = p.is_some_and(|p| p.online);
        if json {
            let v = serde_json::json!({
                "device": device,
                "online": online,
                "site": p.map(|p| p.site.clone()).unwrap_or_default(),
                "id": h.id,
                "text": h.text,
                "asked_unix": h.asked_unix,
                "expires_unix": h.expires_unix,
            });
            println!("{v}");
        } else {
            println!(
                "{:<24} {:<8} {:<16} {:<14} {}",
                printable(device),
                if online { "online" } else { "offline" },
                printable(&p.map(|p| p.site.clone()).unwrap_or_default()),
                format!(
                    "{} ago",
                    shoulder_proto::human_duration(now.saturating_sub(h.asked_unix))
                ),
                printable(&h.text)
            );
        }
    }
    Ok(())
}

fn chat(target: &str, text: &str, conn: &ConnArgs) -> Result<(), ClientError> {
    if text.trim().is_empty() {
        return Err(ClientError::Local("The chat line is empty.".into()));
    }
    if text.len() > shoulder_proto::MAX_CHAT_LEN {
        return Err(ClientError::Local(format!(
            "The chat line is too long ({} bytes, at most {}).",
            text.len(),
            shoulder_proto::MAX_CHAT_LEN
        )));
    }
    let opts = options(Target::parse(target)?, conn, true)?;
    let text = text.to_string();
    let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent2 = sent.clone();
    let ended = headless(opts, move |e, _view, tx| {
        if let ClientEvent::State(ExpertState::Viewing { .. }) = e
            && !sent2.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = tx.try_send(UserAction::Chat(text.clone()));
            let _ = tx.try_send(UserAction::Disconnect);
        }
    })?;
    match ended {
        Ended::Interrupted(signal) if !sent.load(std::sync::atomic::Ordering::SeqCst) => Err(
            ClientError::Local(format!("{signal} before the chat line was sent.")),
        ),
        _ => Ok(()),
    }
}

/// The most `shoulder type` sends: pages of text are not typed.
const MAX_TYPE_TOTAL: usize = 64 * 1024;

fn type_text(target: &str, text: Option<String>, conn: &ConnArgs) -> Result<(), ClientError> {
    use shoulder_proto::session::expert::type_text_parts;
    let text = match text.as_deref() {
        Some("-") | None => {
            let mut s = String::new();
            std::io::Read::take(std::io::stdin(), MAX_TYPE_TOTAL as u64 + 1)
                .read_to_string(&mut s)
                .map_err(|e| {
                    ClientError::Local(format!(
                        "Cannot read the text from standard input: {e} (it must be UTF-8)."
                    ))
                })?;
            s
        }
        Some(t) => t.to_string(),
    };
    if text.is_empty() {
        return Err(ClientError::Local("The text to type is empty.".into()));
    }
    if text.len() > MAX_TYPE_TOTAL {
        return Err(ClientError::Local(format!(
            "The text is too long to type (more than {} KiB).",
            MAX_TYPE_TOTAL / 1024
        )));
    }
    let total = text.chars().filter(|&c| c != '\r').count();
    let mut parts = type_text_parts(&text).into_iter().enumerate();
    let opts = options(Target::parse(target)?, conn, true)?;
    let failed: Arc<std::sync::Mutex<Option<ClientError>>> = Default::default();
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (failed2, finished2) = (failed.clone(), finished.clone());
    let mut asked = false;
    let mut typing = false;
    let mut typed = 0u64;
    let ended = headless(opts, move |e, _view, tx| {
        // The first failure is the one to tell: the device says how far
        // typing got before it says control ended.
        let fail = |why: String| {
            failed2
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(ClientError::Local(why));
            let _ = tx.try_send(UserAction::Disconnect);
        };
        let mut send_next = |typing: &mut bool| match parts.next() {
            Some((i, part)) => {
                *typing = true;
                let _ = tx.try_send(UserAction::TypeText {
                    id: i as u32 + 1,
                    text: part,
                });
            }
            None => {
                // Done: the release below ends control, which is no failure.
                *typing = false;
                finished2.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = tx.try_send(UserAction::ReleaseControl);
                let _ = tx.try_send(UserAction::Disconnect);
            }
        };
        match e {
            ClientEvent::State(ExpertState::Viewing {
                control: ControlState::None,
            }) if !asked => {
                asked = true;
                eprintln!("Asking the person at the device for control…");
                let _ = tx.try_send(UserAction::RequestControl);
            }
            ClientEvent::State(ExpertState::Viewing {
                control: ControlState::Granted { .. },
            }) if !typing => {
                eprintln!("Typing {total} characters…");
                send_next(&mut typing);
            }
            ClientEvent::ControlDeclined(why) => fail(why.clone()),
            ClientEvent::ControlEnded(why) if typing => fail(why.clone()),
            ClientEvent::Typed {
                typed: n, outcome, ..
            } => {
                typed += u64::from(*n);
                if *outcome == TypeOutcome::Done {
                    send_next(&mut typing);
                } else if typed > 0 {
                    fail(format!(
                        "{} (of {total} characters, {typed} were typed.)",
                        outcome.sentence(*n)
                    ));
                } else {
                    fail(outcome.sentence(*n));
                }
            }
            _ => {}
        }
    })?;
    if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    match ended {
        _ if finished.load(std::sync::atomic::Ordering::SeqCst) => {
            eprintln!("Typed {total} characters.");
            Ok(())
        }
        Ended::Interrupted(signal) => Err(ClientError::Local(format!(
            "{signal}: typing stopped before the end."
        ))),
        Ended::Done => Err(ClientError::Local(
            "The session ended before the text was typed.".into(),
        )),
    }
}

enum Transfer {
    Get(String, PathBuf),
    Put(PathBuf),
}

/// `shoulder get` / `shoulder put`: one transfer once viewing, then
/// disconnect. Ctrl-C cancels it (the device keeps nothing).
fn transfer(target: &str, what: Transfer, conn: &ConnArgs) -> Result<(), ClientError> {
    use client::files::{Step, Transfer as Side};
    use std::sync::atomic::{AtomicBool, Ordering};
    const ID: u32 = 1;
    let (mut side, first) = match &what {
        Transfer::Get(remote, local) => Side::get(ID, remote, local),
        Transfer::Put(local) => Side::put(ID, local),
    }
    .map_err(ClientError::Local)?;
    let opts = options(Target::parse(target)?, conn, true)?;
    let result: Arc<std::sync::Mutex<Option<Result<String, String>>>> = Default::default();
    let finished = Arc::new(AtomicBool::new(false));
    let (result2, finished2) = (result.clone(), finished.clone());
    let mut first = Some(first);
    let mut shown = 0u64;
    let ended = headless(opts, move |e, _view, tx| {
        let step = match e {
            ClientEvent::State(ExpertState::Viewing { .. }) => {
                if let Some(a) = first.take() {
                    eprintln!("Asking the person at the device for the file…");
                    let _ = tx.try_send(a);
                }
                return;
            }
            ClientEvent::File(m) => side.on(m),
            _ => return,
        };
        match step {
            Step::Go(actions) => {
                for a in actions {
                    if tx.try_send(a).is_err() {
                        *result2.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Err("The client could not keep up with the transfer.".into()));
                        let _ = tx.try_send(UserAction::Disconnect);
                    }
                }
            }
            Step::Asking { name, size } => eprintln!(
                "The person at the device is asked about {name} ({}).",
                shoulder_proto::files::human_size(size)
            ),
            Step::Progress { done, total } => {
                // A line per tenth, not per chunk.
                let tenth = (total / 10).max(1);
                if done == 0 || done / tenth != shown / tenth || done == total {
                    eprintln!(
                        "{} of {}",
                        shoulder_proto::files::human_size(done),
                        shoulder_proto::files::human_size(total)
                    );
                }
                shown = done;
            }
            Step::Finished(r) => {
                finished2.store(true, Ordering::SeqCst);
                *result2.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                let _ = tx.try_send(UserAction::Disconnect);
            }
        }
    })?;
    let outcome = result.lock().unwrap_or_else(|p| p.into_inner()).take();
    match outcome {
        Some(Ok(sentence)) => {
            eprintln!("{sentence}");
            Ok(())
        }
        Some(Err(why)) => Err(ClientError::Local(why)),
        None => match ended {
            Ended::Interrupted(signal) => Err(ClientError::Local(format!(
                "{signal}: the transfer was cancelled; nothing half-written was kept."
            ))),
            Ended::Done => Err(ClientError::Local(
                "The session ended before the transfer finished; nothing half-written was kept."
                    .into(),
            )),
        },
    }
}

/// `shoulder ls`: one listing, printed on stdout.
fn list(target: &str, dir: &str, conn: &ConnArgs) -> Result<(), ClientError> {
    use shoulder_proto::files::FileMsg;
    const ID: u32 = 1;
    let opts = options(Target::parse(target)?, conn, true)?;
    type Lines = Result<Vec<String>, String>;
    let result: Arc<std::sync::Mutex<Option<Lines>>> = Default::default();
    let result2 = result.clone();
    let mut first = Some(client::files::list(ID, dir));
    let ended = headless(opts, move |e, _view, tx| {
        let r = match e {
            ClientEvent::State(ExpertState::Viewing { .. }) => {
                if let Some(a) = first.take() {
                    let _ = tx.try_send(a);
                }
                return;
            }
            ClientEvent::File(m) => match &**m {
                FileMsg::Listing(l) if l.id == ID => Ok(client::files::listing_lines(l)),
                FileMsg::Done { id: ID, outcome } => Err(outcome.sentence()),
                _ => return,
            },
            _ => return,
        };
        *result2.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        let _ = tx.try_send(UserAction::Disconnect);
    })?;
    let outcome = result.lock().unwrap_or_else(|p| p.into_inner()).take();
    match outcome {
        Some(Ok(lines)) => {
            for l in lines {
                println!("{l}");
            }
            Ok(())
        }
        Some(Err(why)) => Err(ClientError::Local(why)),
        None => match ended {
            Ended::Interrupted(signal) => Err(ClientError::Local(format!("{signal}: stopped."))),
            Ended::Done => Err(ClientError::Local(
                "The session ended before the device answered.".into(),
            )),
        },
    }
}

fn pki(p: Pki) -> Result<(), ClientError> {
    match p {
        Pki::InitCa { dir, name } => {
            let fp = identity::init_ca(&dir, &name)?;
            println!(
                "Plant CA created in {}: {} (keep {} secret).\nCA fingerprint: {fp}",
                dir.display(),
                identity::CA_CERT,
                identity::CA_KEY
            );
            Ok(())
        }
        Pki::IssueExpert {
            ca,
            name,
            out,
            days,
        } => {
            let out = match out {
                Some(o) => o,
                None => identity::identities_dir()?.join(sanitize(&name)),
            };
            let fp = identity::issue_expert(&ca, &name, &out, days)?;
            println!(
                "Expert identity \"{name}\" written to {} (valid {days} days).\nCertificate fingerprint: {fp}",
                out.display()
            );
            Ok(())
        }
        Pki::SignDevice { ca, csr, out, days } => {
            let len = std::fs::metadata(&csr)
                .map_err(|e| ClientError::Local(format!("Cannot read {}: {e}.", csr.display())))?
                .len();
            if len > MAX_CSR_LEN {
                return Err(ClientError::Local(format!(
                    "{} is too large to be a certificate request.",
                    csr.display()
                )));
            }
            let pem = std::fs::read_to_string(&csr)
                .map_err(|e| ClientError::Local(format!("Cannot read {}: {e}.", csr.display())))?;
            let cert = identity::sign_device(&ca, &pem, days)?;
            let out = out.unwrap_or_else(|| csr.with_extension("crt"));
            std::fs::write(&out, cert)
                .map_err(|e| ClientError::Local(format!("Cannot write {}: {e}.", out.display())))?;
            println!(
                "Device certificate written to {} (valid {days} days) — install it on the device.",
                out.display()
            );
            Ok(())
        }
    }
}

/// A directory name from an expert name.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(['-', '.']).to_string();
    if s.is_empty() { "expert".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn names_become_directory_names() {
        assert_eq!(sanitize("Ann Expert"), "Ann-Expert");
        assert_eq!(sanitize("../.."), "expert");
    }

    #[test]
    fn version_names_the_protocol() {
        assert!(version_string().ends_with(&format!("(protocol {PROTOCOL_VERSION})")));
    }
}
