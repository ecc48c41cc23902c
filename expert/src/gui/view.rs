//! The live view: device pixels on screen, the cursor, and egui input
//! turned into device input.

use std::time::Duration;

use eframe::egui::{
    self, Color32, ColorImage, Event, PointerButton, Pos2, Rect, Sense, TextureHandle,
    TextureOptions, Vec2,
};
use shoulder_proto::session::{ControlState, UserAction};
use shoulder_proto::{Buttons, TouchPhase};

use crate::keymap::evdev_code;

use super::{POINTS_PER_WHEEL_CLICK, Phase, SessionUi, ViewInput};

impl ViewInput<'_> {
    fn device_pos(&self, p: Pos2) -> (u16, u16) {
        let (w, h) = (f32::from(self.size.0), f32::from(self.size.1));
        let x = ((p.x - self.rect.min.x) / self.rect.width() * w).clamp(0.0, w - 1.0);
        let y = ((p.y - self.rect.min.y) / self.rect.height() * h).clamp(0.0, h - 1.0);
        (x as u16, y as u16)
    }

    pub(super) fn translate(&mut self, events: &[Event], out: &mut Vec<UserAction>) {
        for e in events {
            match e {
                Event::PointerMoved(p) => {
                    let inside = self.rect.contains(*p);
                    if !inside && self.held.buttons() == 0 && self.held.is_idle() {
                        continue;
                    }
                    let (x, y) = self.device_pos(*p);
                    if *self.last_pos == Some((x, y)) {
                        continue;
                    }
                    *self.last_pos = Some((x, y));
                    if self.touch {
                        if let Some(t) = self.held.touch(x, y, TouchPhase::Move) {
                            out.push(UserAction::Touch(t));
                        }
                    } else {
                        let b = self.held.buttons();
                        out.push(UserAction::Pointer(self.held.pointer(x, y, b, 0, 0)));
                    }
                }
                Event::PointerButton {
                    pos,
                    button,
                    pressed,
                    ..
                } => {
                    if *pressed && !self.rect.contains(*pos) {
                        continue;
                    }
                    let (x, y) = self.device_pos(*pos);
                    *self.last_pos = Some((x, y));
                    if self.touch {
                        if *button == PointerButton::Primary {
                            let phase = if *pressed {
                                TouchPhase::Down
                            } else {
                                TouchPhase::Up
                            };
                            if let Some(t) = self.held.touch(x, y, phase) {
                                out.push(UserAction::Touch(t));
                            }
                        }
                        continue;
                    }
                    let bit = match button {
                        PointerButton::Primary => Buttons::LEFT,
                        PointerButton::Secondary => Buttons::RIGHT,
                        PointerButton::Middle => Buttons::MIDDLE,
                        _ => continue,
                    };
                    if !*pressed && self.held.buttons() & bit == 0 {
                        continue;
                    }
                    out.push(UserAction::Pointer(self.held.button(x, y, bit, *pressed)));
                }
                Event::MouseWheel { unit, delta, .. } => {
                    let Some((x, y)) = *self.last_pos else {
                        continue;
                    };
                    let clicks = match unit {
                        egui::MouseWheelUnit::Point => *delta / POINTS_PER_WHEEL_CLICK,
                        egui::MouseWheelUnit::Line => *delta,
                        egui::MouseWheelUnit::Page => *delta * 3.0,
                    };
                    *self.wheel += clicks;
                    let wy = self.wheel.y.trunc().clamp(-127.0, 127.0);
                    let wx = self.wheel.x.trunc().clamp(-127.0, 127.0);
                    if wy != 0.0 || wx != 0.0 {
                        self.wheel.y -= wy;
                        self.wheel.x -= wx;
                        let b = self.held.buttons();
                        // egui: positive y moves content down (wheel away
                        // from the user); positive x moves content right
                        // (wheel to the left).
                        out.push(UserAction::Pointer(
                            self.held.pointer(x, y, b, wy as i8, -wx as i8),
                        ));
                    }
                }
                Event::Key {
                    key,
                    physical_key,
                    pressed,
                    ..
                } if self.keyboard => {
                    if let Some(code) = evdev_code(physical_key.unwrap_or(*key))
                        && let Some(k) = self.held.key(code, *pressed)
                    {
                        out.push(UserAction::Key(k));
                    }
                }
                // Ctrl+C/X/V become clipboard events before they reach us;
                // their key releases still arrive as keys.
                Event::Copy | Event::Cut | Event::Paste(_) if self.keyboard => {
                    let code = match e {
                        Event::Copy => 46,
                        Event::Cut => 45,
                        _ => 47,
                    };
                    if let Some(k) = self.held.key(code, true) {
                        out.push(UserAction::Key(k));
                    }
                }
                _ => {}
            }
        }
    }
}

/// The live view (fit or 1:1) and the input over it.
pub(super) fn self_view(ui: &mut egui::Ui, s: &mut SessionUi) {
    let Some(tex) = s.texture.clone() else {
        ui.centered_and_justified(|ui| {
            ui.spinner();
        });
        return;
    };
    let [w, h] = tex.size();
    let ppp = ui.ctx().pixels_per_point();
    let controlling = s.controlling();
    let mut show = |ui: &mut egui::Ui, size: Vec2| {
        let (rect, response) = ui.allocate_exact_size(size, Sense::click_and_drag());
        let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
        ui.painter().image(tex.id(), rect, uv, Color32::WHITE);
        s.view_rect = Some(rect);
        // The device's cursor, where the device says it is, in its own
        // image when the device sent one.
        let (cursor, shape_changed) = {
            let mut v = s.handle.view.lock();
            let changed = std::mem::take(&mut v.cursor_changed);
            let shape = if changed { v.cursor.clone() } else { None };
            (v.cursor_pos, (changed, shape))
        };
        if let (true, shape) = shape_changed {
            s.cursor_texture = shape.and_then(|c| cursor_texture(ui.ctx(), &c));
        }
        if let Some((cx, cy, true)) = cursor {
            let sx = rect.width() / w as f32;
            let sy = rect.height() / h as f32;
            let p = Pos2::new(
                rect.min.x + f32::from(cx) * sx,
                rect.min.y + f32::from(cy) * sy,
            );
            match &s.cursor_texture {
                Some((tex, hot)) => {
                    let size = tex.size_vec2() * Vec2::new(sx, sy);
                    let min = p - *hot * Vec2::new(sx, sy);
                    let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
                    ui.painter().image(
                        tex.id(),
                        Rect::from_min_size(min, size),
                        uv,
                        Color32::WHITE,
                    );
                }
                None => draw_cursor(ui.painter(), p),
            }
        }
        if controlling {
            if response.clicked()
                || response.drag_started()
                || response.hovered() && !ui.ctx().egui_wants_keyboard_input()
            {
                response.request_focus();
            }
            ui.memory_mut(|m| {
                m.set_focus_lock_filter(
                    response.id,
                    egui::EventFilter {
                        tab: true,
                        horizontal_arrows: true,
                        vertical_arrows: true,
                        escape: true,
                    },
                )
            });
            let keyboard = response.has_focus();
            let events = ui.input(|i| i.events.clone());
            let mut out = Vec::new();
            ViewInput {
                rect,
                size: (w as u16, h as u16),
                held: &mut s.held,
                touch: s.touch_mode,
                keyboard,
                wheel: &mut s.wheel,
                last_pos: &mut s.last_pos,
            }
            .translate(&events, &mut out);
            for a in out {
                s.handle.send(a);
            }
            if response.hovered() {
                ui.ctx().set_cursor_icon(egui::CursorIcon::Crosshair);
            }
        }
    };
    if s.fit {
        let avail = ui.available_size();
        let scale = (avail.x / w as f32).min(avail.y / h as f32).max(0.01);
        let size = Vec2::new(w as f32 * scale, h as f32 * scale);
        ui.vertical_centered(|ui| {
            ui.add_space(((avail.y - size.y) / 2.0).max(0.0));
            show(ui, size);
        });
    } else {
        let size = Vec2::new(w as f32 / ppp, h as f32 / ppp);
        egui::ScrollArea::both()
            .scroll_source(egui::containers::scroll_area::ScrollSource {
                mouse_wheel: !controlling,
                ..egui::containers::scroll_area::ScrollSource::ALL
            })
            .show(ui, |ui| show(ui, size));
    }
}

/// A stable name for each phase (trace lines).
pub(super) fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Connecting(_) => "connecting",
        Phase::Waiting { .. } => "waiting-for-consent",
        Phase::Viewing(ControlState::None) => "viewing",
        Phase::Viewing(ControlState::Requested { .. }) => "waiting-for-control",
        Phase::Viewing(ControlState::Granted {
            local_user_active: false,
        }) => "controlling",
        Phase::Viewing(ControlState::Granted {
            local_user_active: true,
        }) => "local-user-active",
        Phase::Reconnecting { .. } => "reconnecting",
        Phase::Ended(_) => "ended",
    }
}

/// The device's cursor image (ARGB8888, bytes B,G,R,A) as a texture, with
/// its hotspot.
fn cursor_texture(
    ctx: &egui::Context,
    c: &shoulder_proto::CursorShape,
) -> Option<(TextureHandle, Vec2)> {
    let (w, h) = (usize::from(c.width), usize::from(c.height));
    if w == 0 || h == 0 || c.pixels.0.len() != w * h * 4 {
        return None;
    }
    let rgba: Vec<u8> = c
        .pixels
        .0
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0], p[3]])
        .collect();
    let img = ColorImage::from_rgba_unmultiplied([w, h], &rgba);
    let tex = ctx.load_texture("device-cursor", img, TextureOptions::NEAREST);
    Some((tex, Vec2::new(f32::from(c.hot_x), f32::from(c.hot_y))))
}

/// An arrow where the cursor is, when its shape is not known.
pub(super) fn draw_cursor(p: &egui::Painter, at: Pos2) {
    let pts = vec![
        at,
        at + Vec2::new(0.0, 16.0),
        at + Vec2::new(4.5, 12.0),
        at + Vec2::new(11.0, 12.0),
    ];
    p.add(egui::Shape::convex_polygon(
        pts,
        Color32::WHITE,
        egui::Stroke::new(1.0, Color32::BLACK),
    ));
}

pub(super) fn format_ping(rtt: Duration) -> String {
    let ms = rtt.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("ping {ms:.1} ms")
    } else {
        format!("ping {ms:.0} ms")
    }
}

pub(super) fn format_rate(bps: f64) -> String {
    if bps >= 1_000_000.0 {
        format!("{:.1} MB/s", bps / 1_000_000.0)
    } else if bps >= 1000.0 {
        format!("{:.0} kB/s", bps / 1000.0)
    } else {
        format!("{bps:.0} B/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::HeldInput;
    use eframe::egui::Key;

    fn view_input<'a>(
        held: &'a mut HeldInput,
        wheel: &'a mut Vec2,
        last: &'a mut Option<(u16, u16)>,
    ) -> ViewInput<'a> {
        ViewInput {
            rect: Rect::from_min_size(Pos2::new(100.0, 50.0), Vec2::new(400.0, 240.0)),
            size: (800, 480),
            held,
            touch: false,
            keyboard: true,
            wheel,
            last_pos: last,
        }
    }

    #[test]
    fn pointer_maps_to_device_pixels() {
        let (mut h, mut w, mut l) = (HeldInput::new(), Vec2::ZERO, None);
        let mut vi = view_input(&mut h, &mut w, &mut l);
        let mut out = Vec::new();
        vi.translate(
            &[
                Event::PointerMoved(Pos2::new(300.0, 170.0)),
                Event::PointerButton {
                    pos: Pos2::new(300.0, 170.0),
                    button: PointerButton::Primary,
                    pressed: true,
                    modifiers: egui::Modifiers::NONE,
                },
                // Outside the view: ignored unless a button is held.
                Event::PointerMoved(Pos2::new(10.0, 10.0)),
            ],
            &mut out,
        );
        let UserAction::Pointer(p) = out[0] else {
            panic!("{out:?}")
        };
        assert_eq!((p.x, p.y, p.buttons.0), (400, 240, 0));
        let UserAction::Pointer(p) = out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(p.buttons.0, Buttons::LEFT);
        let UserAction::Pointer(p) = out[2] else {
            panic!("{out:?}")
        };
        assert_eq!((p.x, p.y), (0, 0), "clamped to the screen while dragging");
    }

    #[test]
    fn keys_use_the_physical_key_and_skip_repeats() {
        let (mut h, mut w, mut l) = (HeldInput::new(), Vec2::ZERO, None);
        let mut vi = view_input(&mut h, &mut w, &mut l);
        let key = |key, physical, pressed| Event::Key {
            key,
            physical_key: physical,
            pressed,
            repeat: false,
            modifiers: egui::Modifiers::NONE,
        };
        let mut out = Vec::new();
        // AZERTY: the logical A sits on the physical Q key.
        vi.translate(
            &[
                key(Key::A, Some(Key::Q), true),
                key(Key::A, Some(Key::Q), true),
                key(Key::A, Some(Key::Q), false),
                Event::Copy,
            ],
            &mut out,
        );
        let codes: Vec<(u16, bool)> = out
            .iter()
            .map(|a| match a {
                UserAction::Key(k) => (k.code, k.down),
                _ => panic!("{a:?}"),
            })
            .collect();
        assert_eq!(codes, [(16, true), (16, false), (46, true)]);
    }

    #[test]
    fn wheel_accumulates_smooth_scrolling_into_clicks() {
        let (mut h, mut w, mut l) = (HeldInput::new(), Vec2::ZERO, Some((5, 5)));
        let mut vi = view_input(&mut h, &mut w, &mut l);
        let mut out = Vec::new();
        let wheel = |y| Event::MouseWheel {
            unit: egui::MouseWheelUnit::Point,
            delta: Vec2::new(0.0, y),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Unknown,
            modifiers: egui::Modifiers::NONE,
        };
        vi.translate(&[wheel(25.0), wheel(25.0)], &mut out);
        assert_eq!(out.len(), 1);
        let UserAction::Pointer(p) = out[0] else {
            panic!()
        };
        assert_eq!(p.wheel, 1);
    }
}
