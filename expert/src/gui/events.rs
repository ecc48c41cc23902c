//! The driver's events on their way to the GUI: a bounded queue the driver
//! never waits on.
//!
//! The GUI takes everything queued once per frame. While it does not draw
//! (window minimized, a slow frame), events pile up, and the bound decides
//! what may be left out:
//!
//! - `UpdateApplied`, and a periodic view check that found nothing
//!   (`ViewChecked { asked: false, differing: 0, .. }`), tell the GUI only
//!   what it reads from the [`SharedView`](crate::client::SharedView)
//!   anyway: the framebuffer, its dirty region, the statistics. Over the
//!   bound they are dropped.
//! - Every other event changes what the GUI shows and cannot be read again
//!   elsewhere: session state, screen, control, chat, reconnects, the end.
//!   They are never dropped, not even over the bound; they come at human
//!   pace (a handful per phase of a session), so they cannot make the queue
//!   grow much by themselves.
//!
//! A push takes a mutex that the GUI holds only to swap the queue out, so
//! the network driver never waits for the GUI.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::client::ClientEvent;

/// Events held for the GUI before droppable ones are dropped. The GUI
/// empties the queue every frame, and between two frames the driver emits
/// a few updates at most; 256 rides out seconds of a GUI that does not
/// draw, in a few KiB.
pub const UI_EVENT_QUEUE: usize = 256;

type Queue = Mutex<VecDeque<ClientEvent>>;

/// A queue of `bound` droppable events from the driver to the GUI.
pub fn ui_events(bound: usize) -> (UiEventSender, UiEventReceiver) {
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    (
        UiEventSender {
            queue: Arc::downgrade(&queue),
            bound,
        },
        UiEventReceiver { queue },
    )
}

/// The driver's end.
#[derive(Debug, Clone)]
pub struct UiEventSender {
    /// Weak: once the GUI dropped its end, events go nowhere.
    queue: Weak<Queue>,
    bound: usize,
}

impl UiEventSender {
    /// Queues `e` without waiting. Returns whether it was queued: false
    /// when the GUI is gone, or `e` is droppable and the queue is full.
    pub fn send(&self, e: ClientEvent) -> bool {
        let Some(queue) = self.queue.upgrade() else {
            return false;
        };
        let mut q = lock(&queue);
        if q.len() >= self.bound && droppable(&e) {
            return false;
        }
        q.push_back(e);
        true
    }
}

/// The GUI's end.
#[derive(Debug)]
pub struct UiEventReceiver {
    queue: Arc<Queue>,
}

impl UiEventReceiver {
    /// Everything queued, oldest first.
    pub fn take_all(&self) -> VecDeque<ClientEvent> {
        std::mem::take(&mut *lock(&self.queue))
    }
}

/// Whether the GUI can do without `e`: it reads the same from the shared
/// view.
fn droppable(e: &ClientEvent) -> bool {
    matches!(
        e,
        ClientEvent::UpdateApplied { .. }
            | ClientEvent::ViewChecked {
                asked: false,
                differing: 0,
                ..
            }
    )
}

fn lock(queue: &Queue) -> MutexGuard<'_, VecDeque<ClientEvent>> {
    // A panic elsewhere while holding the lock leaves a queue that is still
    // a valid queue.
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_proto::session::ExpertState;

    fn update(seq: u32) -> ClientEvent {
        ClientEvent::UpdateApplied {
            seq,
            bytes: 1,
            rects: 1,
            t_mono_us: 0,
            t_recv_us: 0,
        }
    }

    #[test]
    fn over_the_bound_only_what_the_view_holds_is_dropped() {
        let (tx, rx) = ui_events(2);
        assert!(tx.send(update(1)));
        assert!(tx.send(update(2)));
        assert!(!tx.send(update(3)));
        assert!(!tx.send(ClientEvent::ViewChecked {
            compared: 4,
            differing: 0,
            asked: false,
        }));
        assert!(tx.send(ClientEvent::ViewChecked {
            compared: 4,
            differing: 0,
            asked: true,
        }));
        assert!(tx.send(ClientEvent::State(ExpertState::Closed)));
        assert!(tx.send(ClientEvent::Chat("hi".into())));
        assert!(tx.send(ClientEvent::Ended(None)));
        let got: Vec<_> = rx.take_all().into_iter().collect();
        assert_eq!(got.len(), 6);
        assert!(matches!(got[1], ClientEvent::UpdateApplied { seq: 2, .. }));
        assert!(matches!(
            got[2],
            ClientEvent::ViewChecked { asked: true, .. }
        ));
        assert!(matches!(got[5], ClientEvent::Ended(None)));
        // Taken: there is room again.
        assert!(tx.send(update(4)));
        assert_eq!(rx.take_all().len(), 1);
    }

    #[test]
    fn events_for_a_gone_gui_go_nowhere() {
        let (tx, rx) = ui_events(UI_EVENT_QUEUE);
        drop(rx);
        assert!(!tx.send(ClientEvent::Ended(None)));
    }
}
