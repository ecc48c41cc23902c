//! The start screen: offer help to a device or use an invitation, and the
//! list of recent devices.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use eframe::egui::{self, Color32, Key, RichText};
use shoulder_proto::human_duration;
use shoulder_proto::invite::Invitation;

use crate::client::ConnectOptions;
use crate::error::ClientError;
use crate::identity::{self, Identity};
use crate::printable::printable;
use crate::target::{Target, read_invitation_file, split_host_port};
use crate::trust::AcceptNew;

use super::{App, MAX_RECENT, Recent, Screen, StartForm, StartTab};

impl Recent {
    pub(super) fn line(&self) -> String {
        match self {
            Recent::Offer { device, identity } => format!("offer\t{device}\t{identity}"),
            Recent::Invitation { path, label } => format!("invitation\t{path}\t{label}"),
        }
    }

    pub(super) fn parse(line: &str) -> Option<Self> {
        let mut p = line.split('\t');
        match (p.next()?, p.next()?, p.next().unwrap_or("")) {
            ("offer", d, i) => Some(Recent::Offer {
                device: d.into(),
                identity: i.into(),
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
            Recent::Offer { device, identity } if identity.is_empty() => format!("Offer: {device}"),
            Recent::Offer { device, identity } => format!("Offer: {device} as {identity}"),
            Recent::Invitation { label, .. } => format!("Invitation: {label}"),
        }
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
        }
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
            });
            ui.separator();
            match form.tab {
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
                        ui.label("");
                        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                        if ui.button("Connect").clicked() || enter {
                            match offer_options(&form.device, &form.identity) {
                                Ok(mut o) => {
                                    o.lossless = form.exact;
                                    remember(
                                        &mut form.recent,
                                        Recent::Offer {
                                            device: form.device.trim().to_string(),
                                            identity: form.identity.clone(),
                                        },
                                    );
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
                    Some(Recent::Offer { device, identity }) => {
                        form.tab = StartTab::Offer;
                        form.device = device;
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

fn offer_options(device: &str, identity_arg: &str) -> Result<ConnectOptions, ClientError> {
    let device = device.trim();
    if device.is_empty() {
        return Err(ClientError::Local(
            "Type the device's address first.".into(),
        ));
    }
    let (host, port) = split_host_port(device)?;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_entries_round_trip() {
        let r = Recent::Offer {
            device: "kiosk:7575".into(),
            identity: "ann".into(),
        };
        assert_eq!(Recent::parse(&r.line()), Some(r));
        assert_eq!(Recent::parse("junk"), None);
    }
}
