//! A sink that records what it would write, for tests (here and in the
//! agent).

use std::sync::{Arc, Mutex};

use crate::InputError;
use crate::codes::{ABS_MT_SLOT, ABS_MT_TRACKING_ID, EV_ABS, EV_KEY};
use crate::inject::{Batch, InjectMode, RawEvent, ScreenSize, VirtualDevice};
use crate::sink::{InputBackend, Sink};

/// What the recorder saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Created {
        mode: InjectMode,
        screen: ScreenSize,
    },
    Batch(Batch),
    Destroyed,
}

/// The recorder's log, shared so tests can read it after the sink is gone
/// (dropped, or unwound by a panic).
#[derive(Debug, Clone, Default)]
pub struct RecordLog(Arc<Mutex<Vec<Recorded>>>);

impl RecordLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything recorded so far.
    pub fn entries(&self) -> Vec<Recorded> {
        self.lock().clone()
    }

    /// Takes the entries, leaving the log empty.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.lock())
    }

    /// The batches recorded, in order.
    pub fn batches(&self) -> Vec<Batch> {
        self.lock()
            .iter()
            .filter_map(|r| match r {
                Recorded::Batch(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    /// All events written to `device`, in order.
    pub fn events(&self, device: VirtualDevice) -> Vec<RawEvent> {
        self.batches()
            .into_iter()
            .filter(|b| b.device == device)
            .flat_map(|b| b.events)
            .collect()
    }

    /// Key/button codes whose last recorded value on `device` is "down".
    pub fn down_codes(&self, device: VirtualDevice) -> Vec<u16> {
        let mut down = crate::keys::KeySet::new();
        for e in self.events(device) {
            if e.kind == EV_KEY {
                if e.value != 0 {
                    down.insert(e.code);
                } else {
                    down.remove(e.code);
                }
            }
        }
        down.iter().collect()
    }

    /// Touch slots whose last recorded tracking id is a contact.
    pub fn touching_slots(&self) -> Vec<u8> {
        let mut slot = 0u8;
        let mut active = [false; crate::inject::MAX_TOUCH_SLOTS as usize];
        for e in self.events(VirtualDevice::Touch) {
            match (e.kind, e.code) {
                (EV_ABS, ABS_MT_SLOT) => slot = u8::try_from(e.value).unwrap_or(u8::MAX),
                (EV_ABS, ABS_MT_TRACKING_ID) => {
                    if let Some(a) = active.get_mut(slot as usize) {
                        *a = e.value >= 0;
                    }
                }
                _ => {}
            }
        }
        (0..active.len() as u8)
            .filter(|s| active[*s as usize])
            .collect()
    }

    /// Whether anything is still down on any device.
    pub fn anything_down(&self) -> bool {
        [
            VirtualDevice::Pointer,
            VirtualDevice::Keyboard,
            VirtualDevice::Touch,
        ]
        .iter()
        .any(|d| !self.down_codes(*d).is_empty())
            || !self.touching_slots().is_empty()
    }

    /// Whether the devices exist now (created and not destroyed since).
    pub fn is_live(&self) -> bool {
        self.lock()
            .iter()
            .rev()
            .find_map(|r| match r {
                Recorded::Created { .. } => Some(true),
                Recorded::Destroyed => Some(false),
                Recorded::Batch(_) => None,
            })
            .unwrap_or(false)
    }

    fn push(&self, r: Recorded) {
        self.lock().push(r);
    }
}

/// The recording backend.
#[derive(Debug, Default)]
pub struct Recorder {
    log: RecordLog,
    fail_writes: bool,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle on the log that outlives the sink.
    pub fn log(&self) -> RecordLog {
        self.log.clone()
    }

    /// Makes every write fail (as a vanished uinput device would).
    pub fn fail_writes(&mut self, fail: bool) {
        self.fail_writes = fail;
    }
}

impl InputBackend for Recorder {
    fn create(&mut self, mode: InjectMode, screen: ScreenSize) -> Result<(), InputError> {
        self.log.push(Recorded::Created { mode, screen });
        Ok(())
    }

    fn write(&mut self, batch: &Batch) -> Result<(), InputError> {
        if self.fail_writes {
            return Err(InputError::Write {
                device: batch.device.name(),
                source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
            });
        }
        self.log.push(Recorded::Batch(batch.clone()));
        Ok(())
    }

    fn destroy(&mut self) -> Result<(), InputError> {
        self.log.push(Recorded::Destroyed);
        Ok(())
    }
}

/// A sink that records instead of writing to the kernel.
pub type RecordingSink = Sink<Recorder>;

impl RecordingSink {
    /// A recording sink for the grant `consent` stands for; read what it
    /// writes through `sink.backend().log()`.
    pub fn recording(
        consent: &shoulder_proto::consent::ControlConsent,
        mode: InjectMode,
        width: u16,
        height: u16,
    ) -> Result<Self, InputError> {
        Sink::create(consent, mode, width, height, Recorder::new())
    }
}

/// What an [`EventRecorder`] was asked, in order: the expert's events as
/// they reach a sink, before translation ([`Recorder`] shows the evdev
/// batches a real sink writes). For tests of what the agent lets through:
/// consent, hold-back, key policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Injected(shoulder_proto::session::InjectEvent),
    /// Injection asked with a consent that was no longer live: refused (a
    /// bug if it ever shows up).
    Refused(shoulder_proto::session::InjectEvent),
    /// Everything the expert held was released (also when the sink closes).
    ReleaseAll,
}

/// The calls of every [`EventRecorder`] made by [`CallLog::factory`], one
/// sink per control grant, in one list.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    calls: Arc<Mutex<Vec<Call>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl CallLog {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The events injected, in order.
    pub fn injected(&self) -> Vec<shoulder_proto::session::InjectEvent> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Injected(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Makes injection fail as a vanished uinput device does (tests of
    /// device faults); releasing still works.
    pub fn fail_injection(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// A factory of sinks that record into this log.
    pub fn factory(&self) -> crate::control::SinkFactory {
        let log = self.clone();
        Box::new(move |consent, _mode, _screen| {
            if !consent.is_live() {
                return Err(InputError::ControlWithdrawn);
            }
            Ok(Box::new(EventRecorder {
                log: log.clone(),
                open: true,
                stats: crate::inject::SinkStats::default(),
            }) as Box<dyn crate::sink::InputSink>)
        })
    }

    fn push(&self, c: Call) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }
}

/// A sink that records the calls it gets ([`Call`]) instead of injecting.
#[derive(Debug)]
pub struct EventRecorder {
    log: CallLog,
    open: bool,
    stats: crate::inject::SinkStats,
}

impl crate::sink::InputSink for EventRecorder {
    fn inject(
        &mut self,
        consent: &shoulder_proto::consent::ControlConsent,
        event: shoulder_proto::session::InjectEvent,
    ) -> Result<crate::inject::Injected, InputError> {
        if self.log.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(InputError::Write {
                device: "recorder",
                source: std::io::Error::from_raw_os_error(19),
            });
        }
        if !consent.is_live() || !self.open {
            self.stats.refused += 1;
            self.log.push(Call::Refused(event));
            return Err(InputError::ControlWithdrawn);
        }
        self.stats.injected += 1;
        self.log.push(Call::Injected(event));
        Ok(crate::inject::Injected::Forwarded)
    }

    fn release_all(&mut self) -> Result<(), InputError> {
        self.log.push(Call::ReleaseAll);
        Ok(())
    }

    fn set_screen(&mut self, _width: u16, _height: u16) -> Result<(), InputError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), InputError> {
        if std::mem::take(&mut self.open) {
            self.release_all()?;
        }
        Ok(())
    }

    fn is_holding(&self) -> bool {
        false
    }

    fn stats(&self) -> crate::inject::SinkStats {
        self.stats
    }
}
