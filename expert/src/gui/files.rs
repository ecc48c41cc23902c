//! The "Files" panel: copy a file from the device, send one to it (by
//! path, or by dropping it on the window), a progress bar, and Cancel.
//! Each transfer is asked on the device; the panel says what it waits for.

use std::path::{Path, PathBuf};

use eframe::egui::{self, RichText};
use shoulder_proto::files::{FileMsg, Listing, human_size};
use shoulder_proto::session::UserAction;

use crate::client::files::{Step, Transfer};

struct Running {
    side: Transfer,
    /// What the panel calls it.
    name: String,
    done: u64,
    total: u64,
    /// The person at the device is being asked.
    asking: bool,
}

/// The panel's state for one session.
pub(crate) struct FilesPanel {
    pub(crate) open: bool,
    remote: String,
    save_to: String,
    send_path: String,
    running: Option<Running>,
    /// The last transfer's end: whether it went, and the sentence.
    last: Option<(bool, String)>,
    next_id: u32,
    browse: Browse,
}

/// Where the first entries of the browser are, for the app's test trace.
const ENTRY_KEYS: [&str; 4] = [
    "entry-files-0",
    "entry-files-1",
    "entry-files-2",
    "entry-files-3",
];

/// Browsing the directories the device lets the technician read.
#[derive(Default)]
struct Browse {
    /// The listing asked for (its id).
    pending: Option<u32>,
    /// The directory shown, as the device listed it.
    shown: Option<Box<Listing>>,
    /// Why the last listing was refused.
    error: Option<String>,
    /// The readable directories (the top listing), above which "Up" goes
    /// back to that listing.
    roots: Vec<String>,
}

impl std::fmt::Debug for FilesPanel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesPanel")
            .field("open", &self.open)
            .field("running", &self.running.as_ref().map(|r| &r.name))
            .finish()
    }
}

impl Default for FilesPanel {
    fn default() -> Self {
        Self {
            open: false,
            remote: String::new(),
            save_to: default_folder().display().to_string(),
            send_path: String::new(),
            running: None,
            last: None,
            next_id: 0,
            browse: Browse::default(),
        }
    }
}

/// Where downloads go unless the technician says otherwise.
fn default_folder() -> PathBuf {
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"));
    if let Some(h) = home {
        let downloads = Path::new(&h).join("Downloads");
        if downloads.is_dir() {
            return downloads;
        }
        return PathBuf::from(h);
    }
    PathBuf::from(".")
}

impl FilesPanel {
    pub(crate) fn busy(&self) -> bool {
        self.running.is_some()
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Copies `remote` from the device into the save folder.
    pub(crate) fn get(&mut self, send: &dyn Fn(UserAction)) {
        if self.busy() || self.remote.trim().is_empty() {
            return;
        }
        let id = self.id();
        let remote = self.remote.trim().to_string();
        let started = Transfer::get(id, &remote, Path::new(self.save_to.trim()));
        self.start(
            started,
            shoulder_proto::files::base_name(&remote).to_string(),
            send,
        );
    }

    /// A transfer that could start runs (its first step goes to the
    /// device); one that could not says why.
    fn start(
        &mut self,
        started: Result<(Transfer, UserAction), String>,
        name: String,
        send: &dyn Fn(UserAction),
    ) {
        match started {
            Ok((side, first)) => {
                self.running = Some(Running {
                    side,
                    name,
                    done: 0,
                    total: 0,
                    asking: false,
                });
                self.last = None;
                send(first);
            }
            Err(e) => self.last = Some((false, e)),
        }
    }

    /// Sends the local file `path` to the device.
    pub(crate) fn put(&mut self, path: &Path, send: &dyn Fn(UserAction)) {
        if self.busy() {
            self.last = Some((false, "One transfer at a time: wait for this one.".into()));
            return;
        }
        let id = self.id();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.start(Transfer::put(id, path), name, send);
    }

    /// Asks the device what `dir` holds (empty: its readable directories).
    fn browse(&mut self, dir: &str, send: &dyn Fn(UserAction)) {
        let id = self.id();
        self.browse.pending = Some(id);
        self.browse.error = None;
        send(crate::client::files::list(id, dir));
    }

    /// A listing, or the refusal of one, for the browser: taken.
    fn on_listing(&mut self, m: &FileMsg) -> bool {
        let b = &mut self.browse;
        match m {
            FileMsg::Listing(l) if b.pending == Some(l.id) => {
                b.pending = None;
                if l.dir.is_empty() {
                    b.roots = l.entries.iter().map(|e| e.name.to_string()).collect();
                }
                b.shown = Some(l.clone());
            }
            FileMsg::Done { id, outcome } if b.pending == Some(*id) => {
                b.pending = None;
                b.error = Some(outcome.sentence());
            }
            _ => return false,
        }
        true
    }

    /// A file step from the device.
    pub(crate) fn on(&mut self, m: &FileMsg, send: &dyn Fn(UserAction)) {
        if self.on_listing(m) {
            return;
        }
        let Some(r) = self.running.as_mut() else {
            return;
        };
        let step = r.side.on(m);
        match step {
            Step::Go(actions) => {
                match m {
                    FileMsg::Data { data, offset, .. } => r.done = offset + data.0.len() as u64,
                    FileMsg::Ack { received, .. } => r.done = *received,
                    _ => {}
                }
                for a in actions {
                    send(a);
                }
                if let FileMsg::Accepted { size, .. } = m {
                    r.total = *size;
                    r.asking = false;
                }
            }
            Step::Asking { .. } => r.asking = true,
            Step::Progress { done, total } => {
                r.asking = false;
                r.done = done;
                r.total = total;
            }
            Step::Finished(result) => {
                let cancel = r.side.cancel();
                self.running = None;
                self.last = Some(match result {
                    Ok(s) => (true, s),
                    Err(s) => {
                        // A failure on this side (a full disk, a file that
                        // changed): the device stops too. After its own
                        // `Done` it ignores this.
                        send(cancel);
                        (false, s)
                    }
                });
            }
        }
    }

    /// The connection dropped or the session ended: the transfer is over
    /// (the device keeps nothing of it, a download's temporary file goes).
    pub(crate) fn connection_lost(&mut self) {
        self.browse.pending = None;
        if let Some(r) = self.running.take() {
            self.last = Some((
                false,
                format!(
                    "{}: the connection dropped, so the transfer stopped; nothing half-written was kept.",
                    r.name
                ),
            ));
        }
    }

    pub(crate) fn ui(
        &mut self,
        ui: &mut egui::Ui,
        viewing: bool,
        send: &dyn Fn(UserAction),
        tracer: &mut super::Tracer,
        ppp: f32,
    ) {
        ui.heading("Files");
        ui.label(
            RichText::new(
                "Each file is asked of the person at the device. Only the directories the device allows can be read or written.",
            )
            .weak(),
        );
        ui.separator();
        ui.label("Copy from the device");
        let r = ui.add(
            egui::TextEdit::singleline(&mut self.remote)
                .hint_text("/var/log/kiosk/kiosk.log")
                .desired_width(f32::INFINITY),
        );
        tracer.rect("field-files-remote", r.rect, ppp);
        ui.horizontal(|ui| {
            ui.label("to");
            let r =
                ui.add(egui::TextEdit::singleline(&mut self.save_to).desired_width(f32::INFINITY));
            tracer.rect("field-files-save", r.rect, ppp);
        });
        let can = viewing && !self.busy();
        let r = ui.add_enabled(
            can && !self.remote.trim().is_empty(),
            egui::Button::new("Copy"),
        );
        tracer.rect("button-files-copy", r.rect, ppp);
        if r.clicked() {
            self.get(send);
        }
        self.browser(ui, viewing, send, tracer, ppp);
        ui.separator();
        ui.label("Send to the device (or drop a file on this window)");
        let r = ui.add(
            egui::TextEdit::singleline(&mut self.send_path)
                .hint_text("a file on this computer")
                .desired_width(f32::INFINITY),
        );
        tracer.rect("field-files-send", r.rect, ppp);
        let r = ui.add_enabled(
            can && !self.send_path.trim().is_empty(),
            egui::Button::new("Send"),
        );
        tracer.rect("button-files-send", r.rect, ppp);
        if r.clicked() {
            let p = PathBuf::from(self.send_path.trim());
            self.put(&p, send);
        }
        ui.separator();
        if let Some(r) = &self.running {
            if r.asking {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("Asking the person at the device about {}…", r.name));
                });
            } else {
                let fraction = if r.total == 0 {
                    0.0
                } else {
                    r.done as f32 / r.total as f32
                };
                ui.add(egui::ProgressBar::new(fraction).text(format!(
                    "{}: {} of {}",
                    r.name,
                    human_size(r.done),
                    human_size(r.total)
                )));
            }
            if ui.button("Cancel").clicked() {
                send(r.side.cancel());
            }
        } else if let Some((ok, sentence)) = &self.last {
            tracer.note("files", sentence.clone());
            let color = if *ok {
                egui::Color32::from_rgb(0x2e, 0x8b, 0x57)
            } else {
                egui::Color32::from_rgb(0xc0, 0x39, 0x2b)
            };
            ui.colored_label(color, sentence);
        }
        if !viewing {
            ui.label(RichText::new("Files need a session that is viewing the screen.").weak());
        }
    }

    /// The device's readable directories: a directory opens, a file is
    /// picked for Copy (a double click copies it).
    fn browser(
        &mut self,
        ui: &mut egui::Ui,
        viewing: bool,
        send: &dyn Fn(UserAction),
        tracer: &mut super::Tracer,
        ppp: f32,
    ) {
        let mut go: Option<String> = None;
        let mut copy = false;
        ui.horizontal(|ui| {
            let label = if self.browse.shown.is_some() {
                "Top"
            } else {
                "Browse the device…"
            };
            let r = ui.add_enabled(
                viewing && self.browse.pending.is_none(),
                egui::Button::new(label),
            );
            tracer.rect("button-files-browse", r.rect, ppp);
            if r.clicked() {
                go = Some(String::new());
            }
            if let Some(l) = &self.browse.shown
                && !l.dir.is_empty()
            {
                if ui.add_enabled(viewing, egui::Button::new("Up")).clicked() {
                    let dir = l.dir.trim_end_matches('/');
                    // Above a readable directory the device refuses: back
                    // to the list of them instead.
                    let top = self
                        .browse
                        .roots
                        .iter()
                        .any(|r| r.trim_end_matches('/') == dir);
                    let parent = dir
                        .rsplit_once('/')
                        .map(|p| p.0)
                        .filter(|p| !top && !p.is_empty());
                    go = Some(parent.unwrap_or_default().to_string());
                }
                ui.label(RichText::new(crate::printable::printable(&l.dir)).monospace());
            }
            if self.browse.pending.is_some() {
                ui.spinner();
            }
        });
        if let Some(e) = &self.browse.error {
            tracer.note("files-browse", e.clone());
            ui.colored_label(egui::Color32::from_rgb(0xc0, 0x39, 0x2b), e);
        }
        if let Some(l) = &self.browse.shown {
            tracer.note("files-listing", l.entries.len().to_string());
            egui::ScrollArea::vertical()
                .max_height(180.0)
                .id_salt("files-browser")
                .show(ui, |ui| {
                    for (i, e) in l.entries.iter().enumerate() {
                        let path = crate::client::files::entry_path(l, &e.name);
                        let name = crate::printable::printable(&e.name);
                        let text = if e.dir {
                            format!("📁 {name}/")
                        } else {
                            format!("{name}   {}", human_size(e.size))
                        };
                        let picked = !e.dir && self.remote.trim() == path;
                        let r = ui.selectable_label(picked, text);
                        if let Some(key) = ENTRY_KEYS.get(i) {
                            tracer.rect(key, r.rect, ppp);
                        }
                        if r.clicked() {
                            if e.dir {
                                go = Some(path);
                            } else {
                                self.remote = path;
                            }
                        } else if r.double_clicked() && !e.dir {
                            copy = true;
                        }
                    }
                    if l.omitted > 0 {
                        ui.label(RichText::new(format!("… and {} more", l.omitted)).weak());
                    }
                    if l.entries.is_empty() {
                        ui.label(RichText::new("Nothing here to copy.").weak());
                    }
                });
        }
        if let Some(dir) = go {
            self.browse(&dir, send);
        }
        if copy && viewing {
            self.get(send);
        }
    }
}
