//! The start screen: offer help to a device or use an invitation, and the
//! list of recent devices.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use eframe::egui::{self, Color32, Key, RichText};
use shoulder_proto::human_duration;
use shoulder_proto::invite::Invitation;

use crate::client::ConnectOptions;
use crate::client::broker::BrokerRoute;
use crate::error::ClientError;
use crate::identity::{self, Identity};
use crate::printable::printable;
use crate::target::{Target, read_invitation_file, split_host_port};
use crate::trust::AcceptNew;
use shoulder_broker::Presence;

use super::{App, MAX_RECENT, Recent, Screen, StartForm, StartTab};

impl Recent {
    pub(super) fn line(&self) -> String {
        match self {
            Recent::Offer {
                device,
                identity,
                broker,
            } => format!("offer\t{device}\t{identity}\t{broker}"),
            Recent::Invitation { path, label } => format!("invitation\t{path}\t{label}"),
        }
    }

    pub(super) fn parse(line: &str) -> Option<Self> {
        let mut p = line.split('\t');
        match (p.next()?, p.next()?, p.next().unwrap_or("")) {
            ("offer", d, i) => Some(Recent::Offer {
                device: d.into(),
                identity: i.into(),
                broker: p.next().unwrap_or("").into(),
            }),
            ("invitation", path, label) => Some(Recent::Invitation {
                path: path.into(),
                label: label.into(),
            }),
            _ => None,
        }
    }

    fn label(&self) -> String {
        match self {
            Recent::Offer {
                device,
                identity,
                broker,
            } => {
                let mut l = format!("Offer: {device}");
                if !broker.is_empty() {
                    l.push_str(&format!(" via {broker}"));
                }
                if !identity.is_empty() {
                    l.push_str(&format!(" as {identity}"));
                }
                l
            }
            Recent::Invitation { label, .. } => format!("Invitation: {label}"),
        }
    }
}

fn broker_path() -> Option<PathBuf> {
    identity::config_dir().ok().map(|d| d.join("broker"))
}

/// The broker last used (a convenience, like the recent list).
fn load_broker() -> String {
    broker_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
        .filter(|l| l.len() <= 256)
        .unwrap_or_default()
}

fn save_broker(address: &str) {
    if let Some(p) = broker_path() {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::write(p, format!("{address}\n"));
    }
}

fn recent_path() -> Option<PathBuf> {
    identity::config_dir().ok().map(|d| d.join("recent"))
}

fn load_recent() -> Vec<Recent> {
    let Some(p) = recent_path() else {
        return Vec::new();
    };
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(Recent::parse)
        .take(MAX_RECENT)
        .collect()
}

fn remember(list: &mut Vec<Recent>, r: Recent) {
    list.retain(|x| *x != r);
    list.insert(0, r);
    list.truncate(MAX_RECENT);
    if let Some(p) = recent_path() {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let text: String = list.iter().map(|r| r.line() + "\n").collect();
        // The recent list is a convenience: failing to save it is not worth
        // interrupting the expert for.
        let _ = std::fs::write(p, text);
    }
}

impl StartForm {
    pub(super) fn new() -> Self {
        let identities = identity::list_identities();
        Self {
            tab: StartTab::Offer,
            device: String::new(),
            identity: identities.first().cloned().unwrap_or_default(),
            identities,
            invitation_text: String::new(),
            invitation_path: String::new(),
            invitation: None,
            password: String::new(),
            error: None,
            recent: load_recent(),
            exact: false,
            broker: load_broker(),
            broker_ca: None,
            broker_prefix: "shoulder".into(),
            directory: None,
            directory_rx: None,
            refresh: false,
            filter: String::new(),
            online_only: false,
        }
    }

    /// The broker route the form names; `None` when the field is empty.
    fn route(&self) -> Result<Option<BrokerRoute>, ClientError> {
        let b = self.broker.trim();
        if b.is_empty() {
            return Ok(None);
        }
        let mut r = BrokerRoute::parse(b)?;
        r.ca = self.broker_ca.clone();
        r.prefix = self.broker_prefix.clone();
        Ok(Some(r))
    }

    /// Offer options for `device`, through the form's broker if it names one.
    fn offer(&self, device: &str) -> Result<ConnectOptions, ClientError> {
        let route = self.route()?;
        let mut o = offer_options(device, &self.identity, route.is_some())?;
        o.lossless = self.exact;
        if let Some(r) = &route {
            save_broker(&r.label());
        }
        o.broker = route;
        Ok(o)
    }

    fn load_invitation_file(&mut self, path: &Path) {
        self.tab = StartTab::Invitation;
        self.error = None;
        self.invitation_path = path.display().to_string();
        self.invitation = Some(
            read_invitation_file(path)
                .map(|i| (i, Some(path.to_owned())))
                .map_err(|e| e.sentence()),
        );
    }
}

impl App {
    pub(super) fn start_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let ppp = ctx.pixels_per_point();
        let tracer = &mut self.tracer;
        let rt = &self.rt;
        let picker = &mut self.picker;
        let Screen::Start(form) = &mut self.screen else {
            return;
        };
        tracer.note("state", "start".into());
        if let Some(rx) = picker {
            match rx.try_recv() {
                Ok(Some(p)) => {
                    form.load_invitation_file(&p);
                    *picker = None;
                }
                Ok(None) | Err(std_mpsc::TryRecvError::Disconnected) => {
                    form.error = Some(
                        "No file chosen — if no dialog appeared, type the path or drop the file on this window."
                            .into(),
                    );
                    *picker = None;
                }
                Err(std_mpsc::TryRecvError::Empty) => {}
            }
        }
        // Dropped invitation files, from anywhere in the window.
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .collect()
        });
        if let Some(p) = dropped.first() {
            form.load_invitation_file(p);
        }
        let mut connect: Option<ConnectOptions> = None;
        egui::CentralPanel::default().show(ui, |ui| {
            ui.vertical_centered(|ui| {
                ui.add_space(16.0);
                ui.heading(RichText::new("Shoulder").size(28.0));
                ui.label("See and help at a device — only when the person there says yes.");
                ui.add_space(12.0);
            });
            ui.horizontal(|ui| {
                ui.selectable_value(&mut form.tab, StartTab::Offer, "Offer help");
                ui.selectable_value(&mut form.tab, StartTab::Invitation, "Open an invitation");
                ui.selectable_value(&mut form.tab, StartTab::Devices, "Devices at the broker");
            });
            ui.separator();
            match form.tab {
                StartTab::Devices => {
                    if let Some(o) = devices_ui(ui, form, rt, &ctx, tracer, ppp) {
                        connect = Some(o);
                    }
                }
                StartTab::Offer => {
                    egui::Grid::new("offer").num_columns(2).spacing([12.0, 8.0]).show(ui, |ui| {
                        ui.label("Device");
                        let r = ui.add(
                            egui::TextEdit::singleline(&mut form.device)
                                .hint_text("host or host:port, e.g. kiosk-12 or 10.0.0.5:7575")
                                .desired_width(360.0),
                        );
                        ui.end_row();
                        ui.label("Identity");
                        if form.identities.is_empty() {
                            ui.add(
                                egui::TextEdit::singleline(&mut form.identity)
                                    .hint_text("identity directory (expert.crt, expert.key)")
                                    .desired_width(360.0),
                            );
                        } else {
                            egui::ComboBox::from_id_salt("identity")
                                .selected_text(form.identity.clone())
                                .show_ui(ui, |ui| {
                                    for id in &form.identities {
                                        ui.selectable_value(&mut form.identity, id.clone(), id);
                                    }
                                });
                        }
                        ui.end_row();
                        ui.label("Through broker");
                        ui.add(
                            egui::TextEdit::singleline(&mut form.broker)
                                .hint_text("optional: the plant's broker, e.g. broker.plant:8883")
                                .desired_width(360.0),
                        )
                        .on_hover_text("For devices you cannot reach directly: the device is then named as the broker knows it.");
                        ui.end_row();
                        ui.label("");
                        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                        if ui.button("Connect").clicked() || enter {
                            match form.offer(&form.device) {
                                Ok(o) => {
                                    let r = Recent::Offer {
                                        device: form.device.trim().to_string(),
                                        identity: form.identity.clone(),
                                        broker: form.broker.trim().to_string(),
                                    };
                                    remember(&mut form.recent, r);
                                    connect = Some(o);
                                }
                                Err(e) => form.error = Some(e.sentence()),
                            }
                        }
                        ui.end_row();
                    });
                    if form.identities.is_empty() {
                        ui.label(
                            RichText::new(
                                "No identity yet: create one with `shoulder pki issue-expert --ca DIR --name \"Your Name\"`.",
                            )
                            .weak(),
                        );
                    }
                }
                StartTab::Invitation => {
                    ui.label("Drop an invitation file on this window, type its path, or paste its text.");
                    ui.horizontal(|ui| {
                        ui.add(
                            egui::TextEdit::singleline(&mut form.invitation_path)
                                .hint_text("path/to/invitation.shoulder")
                                .desired_width(360.0),
                        );
                        if ui.button("Load file").clicked() {
                            let p = PathBuf::from(form.invitation_path.trim());
                            form.load_invitation_file(&p);
                        }
                        let choose = ui.add_enabled(picker.is_none(), egui::Button::new("Choose…"));
                        if choose.clicked() {
                            // The platform's file dialog (the desktop portal
                            // on Linux), off the UI thread.
                            let (tx, rx) = std_mpsc::channel();
                            let repaint = ctx.clone();
                            rt.spawn(async move {
                                let file = rfd::AsyncFileDialog::new()
                                    .set_title("Open a Shoulder invitation")
                                    .add_filter("Shoulder invitation", &["shoulder"])
                                    .pick_file()
                                    .await;
                                let _ = tx.send(file.map(|f| f.path().to_owned()));
                                repaint.request_repaint();
                            });
                            *picker = Some(rx);
                        }
                    });
                    let r = ui.add(
                        egui::TextEdit::multiline(&mut form.invitation_text)
                            .hint_text("SHOULDER1-…")
                            .desired_rows(3)
                            .desired_width(f32::INFINITY),
                    );
                    if r.changed() && !form.invitation_text.trim().is_empty() {
                        form.invitation = Some(
                            Invitation::from_text(form.invitation_text.trim())
                                .map(|i| (i, None))
                                .map_err(|e| e.to_string()),
                        );
                    }
                    match &form.invitation {
                        Some(Ok((inv, _))) => {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_secs())
                                .unwrap_or(0);
                            let left = inv.remaining_secs(now);
                            let when = if left >= 0 {
                                format!("expires in {}", human_duration(left as u64))
                            } else {
                                format!(
                                    "expired {} ago — ask for a new one",
                                    human_duration(left.unsigned_abs())
                                )
                            };
                            let addrs: Vec<&str> = inv.addresses.iter().map(|a| a.as_str()).collect();
                            ui.label(format!(
                                "Device \"{}\" at {} port {} — {when}.",
                                printable(&inv.device_name),
                                addrs.join(", "),
                                inv.port
                            ));
                            ui.horizontal(|ui| {
                                ui.label("Password");
                                let r = ui.add(
                                    egui::TextEdit::singleline(&mut form.password)
                                        .password(true)
                                        .desired_width(220.0),
                                );
                                tracer.rect("field-password", r.rect, ppp);
                                let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                                if ui.button("Connect").clicked() || enter {
                                    let mut opts = self.pending.take().unwrap_or_else(|| {
                                        invitation_options(inv.clone())
                                    });
                                    opts.target = Target::Invitation(Box::new(inv.clone()));
                                    opts.password = Some(form.password.clone());
                                    opts.lossless = form.exact;
                                    if let Some(Ok((_, Some(p)))) = &form.invitation {
                                        let r = Recent::Invitation {
                                            path: p.display().to_string(),
                                            label: printable(&inv.device_name),
                                        };
                                        remember(&mut form.recent, r);
                                    }
                                    connect = Some(opts);
                                }
                            });
                        }
                        Some(Err(e)) => {
                            ui.colored_label(Color32::from_rgb(220, 80, 60), e);
                        }
                        None => {}
                    }
                }
            }
            ui.add_space(8.0);
            ui.checkbox(&mut form.exact, "Exact pictures only").on_hover_text(
                "On a slow link, photographs and video otherwise come first as approximate pictures, made exact once they stop changing.",
            );
            if let Some(e) = &form.error {
                ui.add_space(8.0);
                ui.colored_label(Color32::from_rgb(220, 80, 60), e);
            }
            if !form.recent.is_empty() {
                ui.add_space(16.0);
                ui.label(RichText::new("Recent devices").strong());
                let mut pick = None;
                for r in &form.recent {
                    if ui.link(r.label()).clicked() {
                        pick = Some(r.clone());
                    }
                }
                match pick {
                    Some(Recent::Offer {
                        device,
                        identity,
                        broker,
                    }) => {
                        form.tab = StartTab::Offer;
                        form.device = device;
                        form.broker = broker;
                        if !identity.is_empty() {
                            form.identity = identity;
                        }
                    }
                    Some(Recent::Invitation { path, .. }) => {
                        form.load_invitation_file(Path::new(&path));
                    }
                    None => {}
                }
            }
        });
        if let Some(o) = connect {
            self.connect(&ctx, o);
        }
    }
}

fn expert_name(id: Option<&Identity>) -> String {
    id.map(|i| i.name.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "expert".into())
}

/// Offer options; `by_name`: the device is named as the broker knows it,
/// not by an address.
fn offer_options(
    device: &str,
    identity_arg: &str,
    by_name: bool,
) -> Result<ConnectOptions, ClientError> {
    let device = device.trim();
    if device.is_empty() {
        return Err(ClientError::Local(if by_name {
            "Type the device's name first.".into()
        } else {
            "Type the device's address first.".into()
        }));
    }
    let (host, port) = if by_name {
        (device.to_string(), shoulder_proto::DEFAULT_PORT)
    } else {
        split_host_port(device)?
    };
    if identity_arg.trim().is_empty() {
        return Err(ClientError::Local(
            "Offers need your expert identity — pick one, or create it with `shoulder pki issue-expert`.".into(),
        ));
    }
    let id = Arc::new(Identity::load(&identity::resolve_identity(
        identity_arg.trim(),
    )?)?);
    Ok(ConnectOptions {
        target: Target::Offer { host, port },
        password: None,
        name: expert_name(Some(&id)),
        identity: Some(id),
        accept_new: AcceptNew::Ask,
        known_hosts: None,
        lossless: false,
        broker: None,
        listen: None,
    })
}

fn invitation_options(inv: Invitation) -> ConnectOptions {
    ConnectOptions {
        target: Target::Invitation(Box::new(inv)),
        password: None,
        identity: None,
        accept_new: AcceptNew::Ask,
        known_hosts: None,
        name: expert_name(None),
        lossless: false,
        broker: None,
        listen: None,
    }
}

/// The "Devices at the broker" tab: read the list, filter it, offer help
/// to one. Returns the options of the offer chosen.
fn devices_ui(
    ui: &mut egui::Ui,
    form: &mut StartForm,
    rt: &tokio::runtime::Runtime,
    ctx: &egui::Context,
    tracer: &mut super::Tracer,
    ppp: f32,
) -> Option<ConnectOptions> {
    let mut connect = None;
    if let Some(rx) = &form.directory_rx {
        match rx.try_recv() {
            Ok(r) => {
                form.directory = Some(r);
                form.directory_rx = None;
            }
            Err(std_mpsc::TryRecvError::Disconnected) => {
                form.directory = Some(Err("The device list could not be read.".into()));
                form.directory_rx = None;
            }
            Err(std_mpsc::TryRecvError::Empty) => {}
        }
    }
    egui::Grid::new("devices")
        .num_columns(2)
        .spacing([12.0, 8.0])
        .show(ui, |ui| {
            ui.label("Broker");
            ui.add(
                egui::TextEdit::singleline(&mut form.broker)
                    .hint_text("the plant's broker, e.g. broker.plant:8883")
                    .desired_width(360.0),
            );
            ui.end_row();
            ui.label("Identity");
            ui.add(egui::TextEdit::singleline(&mut form.identity).desired_width(360.0));
            ui.end_row();
            ui.label("");
            let reading = form.directory_rx.is_some();
            if ui
                .add_enabled(
                    !reading,
                    egui::Button::new(if reading { "Reading…" } else { "Refresh" }),
                )
                .clicked()
            {
                form.refresh = true;
            }
            ui.end_row();
        });
    if std::mem::take(&mut form.refresh) {
        match read_directory(form, rt, ctx) {
            Ok(rx) => {
                form.error = None;
                form.directory_rx = Some(rx);
            }
            Err(e) => form.error = Some(e.sentence()),
        }
    }
    ui.horizontal(|ui| {
        ui.label("Filter");
        ui.add(
            egui::TextEdit::singleline(&mut form.filter)
                .hint_text("name or site")
                .desired_width(200.0),
        );
        ui.checkbox(&mut form.online_only, "Online only");
    });
    ui.add_space(6.0);
    match &form.directory {
        None => {
            ui.label(RichText::new("Refresh to read the devices the broker knows.").weak());
        }
        Some(Err(e)) => {
            ui.colored_label(Color32::from_rgb(220, 80, 60), e);
        }
        Some(Ok(dir)) => {
            let needle = form.filter.trim().to_lowercase();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // Those asking for help first (oldest request first), then the
            // rest by name.
            let mut shown: Vec<(&String, &Presence)> = dir
                .devices
                .iter()
                .filter(|(_, p)| p.online || !form.online_only)
                .filter(|(d, p)| {
                    needle.is_empty()
                        || [d.as_str(), p.name.as_str(), p.site.as_str()]
                            .iter()
                            .any(|s| s.to_lowercase().contains(&needle))
                })
                .collect();
            shown.sort_by_key(|(d, _)| dir.help.get(*d).map_or(u64::MAX, |h| h.asked_unix));
            tracer.note(
                "directory",
                shown
                    .iter()
                    .map(|(d, _)| printable(d))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            if shown.is_empty() {
                ui.label(
                    RichText::new(if dir.devices.is_empty() {
                        "The broker knows no devices."
                    } else {
                        "No device matches."
                    })
                    .weak(),
                );
            }
            let mut pick = None;
            egui::Grid::new("device-list")
                .num_columns(6)
                .striped(true)
                .spacing([16.0, 6.0])
                .show(ui, |ui| {
                    for h in ["Device", "State", "Site", "Version", "Asks for help", ""] {
                        ui.label(RichText::new(h).strong());
                    }
                    ui.end_row();
                    for (i, (device, p)) in shown.iter().enumerate() {
                        ui.label(printable(device));
                        if p.online {
                            ui.colored_label(Color32::from_rgb(60, 170, 90), "online");
                        } else {
                            ui.label(RichText::new("offline").weak());
                        }
                        ui.label(printable(&p.site));
                        ui.label(printable(&p.version));
                        match dir.help.get(*device) {
                            Some(h) => {
                                let ago = human_duration(now.saturating_sub(h.asked_unix));
                                let text = if h.text.is_empty() {
                                    format!("{ago} ago")
                                } else {
                                    format!("{ago} ago: {}", printable(&h.text))
                                };
                                ui.colored_label(Color32::from_rgb(240, 190, 60), text);
                            }
                            None => {
                                ui.label("");
                            }
                        }
                        let can = p.online && p.offers;
                        let label = if dir.help.contains_key(*device) {
                            "Help now"
                        } else {
                            "Offer help"
                        };
                        let b = ui.add_enabled(can, egui::Button::new(label));
                        let b = if !p.offers {
                            b.on_disabled_hover_text("This device does not take offers.")
                        } else {
                            b
                        };
                        if i == 0 {
                            tracer.rect("button-offer-first", b.rect, ppp);
                        }
                        if b.clicked() {
                            pick = Some(device.to_string());
                        }
                        ui.end_row();
                    }
                });
            if let Some(device) = pick {
                match form.offer(&device) {
                    Ok(o) => {
                        let r = Recent::Offer {
                            device,
                            identity: form.identity.clone(),
                            broker: form.broker.trim().to_string(),
                        };
                        remember(&mut form.recent, r);
                        connect = Some(o);
                    }
                    Err(e) => form.error = Some(e.sentence()),
                }
            }
        }
    }
    connect
}

/// Starts reading the device list off the UI thread.
fn read_directory(
    form: &StartForm,
    rt: &tokio::runtime::Runtime,
    ctx: &egui::Context,
) -> Result<std_mpsc::Receiver<super::Directory>, ClientError> {
    let Some(route) = form.route()? else {
        return Err(ClientError::Local(
            "Type the plant's broker first (host or host:port).".into(),
        ));
    };
    if form.identity.trim().is_empty() {
        return Err(ClientError::Local(
            "The broker needs your expert identity — pick one, or create it with `shoulder pki issue-expert`.".into(),
        ));
    }
    let id = Identity::load(&identity::resolve_identity(form.identity.trim())?)?;
    let (tx, rx) = std_mpsc::channel();
    let repaint = ctx.clone();
    save_broker(&route.label());
    rt.spawn(async move {
        let r = crate::client::broker::read_directory(&route, &id)
            .await
            .map_err(|e| e.sentence());
        let _ = tx.send(r);
        repaint.request_repaint();
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_entries_round_trip() {
        let r = Recent::Offer {
            device: "kiosk:7575".into(),
            identity: "ann".into(),
            broker: "broker.plant:8883".into(),
        };
        assert_eq!(Recent::parse(&r.line()), Some(r));
        // Entries written before brokers were remembered.
        assert_eq!(
            Recent::parse("offer\tkiosk\tann"),
            Some(Recent::Offer {
                device: "kiosk".into(),
                identity: "ann".into(),
                broker: String::new(),
            })
        );
        assert_eq!(Recent::parse("junk"), None);
    }
}
