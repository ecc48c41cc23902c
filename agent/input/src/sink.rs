//! The [`InputSink`] trait and the consent-gated sink that drives a device
//! backend.

use std::fmt;

use shoulder_proto::consent::ControlConsent;
use shoulder_proto::session::InjectEvent;

use crate::InputError;
use crate::inject::{Batch, InjectMode, Injected, InjectorCore, ScreenSize, SinkStats};

/// Where the expert's input goes. Every inject call needs the control
/// consent the session machine handed out with `EnableInjection`; a consent
/// that was withdrawn (stop control, release, disconnect) is refused.
///
/// Releasing never needs consent: it is always safe, and it must still work
/// after consent is gone.
///
/// Without a token there is no call:
///
/// ```compile_fail,E0061
/// use shoulder_input::{InputSink, RecordingSink};
/// use shoulder_proto::msg::Key;
/// use shoulder_proto::session::InjectEvent;
///
/// fn press(sink: &mut RecordingSink) {
///     // error: `inject` takes the control consent as well
///     let _ = sink.inject(InjectEvent::Key(Key { code: 30, down: true }));
/// }
/// ```
///
/// and a token cannot be made outside the session machine:
///
/// ```compile_fail,E0423
/// use shoulder_proto::consent::ControlConsent;
///
/// // error: the fields of `ControlConsent` are private
/// let forged = ControlConsent(Default::default());
/// ```
pub trait InputSink: Send + fmt::Debug {
    /// Injects one expert event. Events that are invalid in the current
    /// state are dropped (counted, `Ok(Injected::Dropped(_))`), never
    /// forwarded. An `Err` means the consent was refused or the devices
    /// failed; after a device error the agent should end control
    /// (`DeviceInput::InjectionFault`).
    fn inject(
        &mut self,
        consent: &ControlConsent,
        event: InjectEvent,
    ) -> Result<Injected, InputError>;

    /// Releases every key, button and touch the expert holds.
    fn release_all(&mut self) -> Result<(), InputError>;

    /// The screen size changed: coordinates are clamped to the new size and
    /// the devices' ranges follow (held input is released first).
    fn set_screen(&mut self, width: u16, height: u16) -> Result<(), InputError>;

    /// Releases everything and destroys the devices. Further injection is
    /// refused; closing again does nothing.
    fn close(&mut self) -> Result<(), InputError>;

    /// Whether the expert holds any key, button or touch.
    fn is_holding(&self) -> bool;

    fn stats(&self) -> SinkStats;
}

/// The device side of a sink: creates the virtual devices, writes batches,
/// destroys them. Implemented by uinput and by the recorder.
pub trait InputBackend: Send + fmt::Debug {
    /// Creates the devices for `mode`, with ranges for `screen`.
    fn create(&mut self, mode: InjectMode, screen: ScreenSize) -> Result<(), InputError>;
    /// Writes one batch (it ends with `SYN_REPORT`) in one go.
    fn write(&mut self, batch: &Batch) -> Result<(), InputError>;
    /// Destroys the devices (nothing is held any more when this is called
    /// on the normal paths).
    fn destroy(&mut self) -> Result<(), InputError>;
}

/// A sink made for one control grant: the devices exist from [`Sink::create`]
/// until [`InputSink::close`] or drop, which release everything first.
#[derive(Debug)]
pub struct Sink<B: InputBackend> {
    core: InjectorCore,
    epoch: u64,
    backend: B,
    open: bool,
    scratch: Vec<Batch>,
}

impl<B: InputBackend> Sink<B> {
    /// Creates the devices for the grant `consent` stands for. Only that
    /// grant's token is accepted later.
    pub fn create(
        consent: &ControlConsent,
        mode: InjectMode,
        width: u16,
        height: u16,
        mut backend: B,
    ) -> Result<Self, InputError> {
        if !consent.is_live() {
            return Err(InputError::ControlWithdrawn);
        }
        let screen = screen(width, height)?;
        backend.create(mode, screen)?;
        Ok(Self {
            core: InjectorCore::new(mode, screen),
            epoch: consent.epoch(),
            backend,
            open: true,
            scratch: Vec::new(),
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The translation state (what is held, the screen, the mode).
    pub fn core(&self) -> &InjectorCore {
        &self.core
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    fn check(&mut self, consent: &ControlConsent) -> Result<(), InputError> {
        if !self.open {
            return Err(InputError::Closed);
        }
        if !consent.is_live() {
            self.core.count_refused();
            return Err(InputError::ControlWithdrawn);
        }
        if consent.epoch() != self.epoch {
            self.core.count_refused();
            return Err(InputError::WrongGrant {
                expected: self.epoch,
                got: consent.epoch(),
            });
        }
        Ok(())
    }

    /// Writes the scratch batches; all are tried, the first error returned.
    fn flush(&mut self) -> Result<(), InputError> {
        let mut first = Ok(());
        for b in self.scratch.drain(..) {
            if let Err(e) = self.backend.write(&b)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

impl<B: InputBackend> InputSink for Sink<B> {
    fn inject(
        &mut self,
        consent: &ControlConsent,
        event: InjectEvent,
    ) -> Result<Injected, InputError> {
        self.check(consent)?;
        self.scratch.clear();
        let r = self.core.translate(event, &mut self.scratch);
        self.flush()?;
        Ok(r)
    }

    fn release_all(&mut self) -> Result<(), InputError> {
        if !self.open {
            return Ok(());
        }
        self.scratch.clear();
        self.core.release_all(&mut self.scratch);
        self.flush()
    }

    fn set_screen(&mut self, width: u16, height: u16) -> Result<(), InputError> {
        let new = screen(width, height)?;
        if new == self.core.screen() {
            return Ok(());
        }
        let released = self.release_all();
        self.core.set_screen(new);
        if !self.open {
            return released;
        }
        // uinput ranges are fixed at creation: make the devices anew.
        let destroyed = self.backend.destroy();
        let created = self.backend.create(self.core.mode(), new);
        if created.is_err() {
            self.open = false;
        }
        released.and(destroyed).and(created)
    }

    fn close(&mut self) -> Result<(), InputError> {
        if !self.open {
            return Ok(());
        }
        let released = self.release_all();
        self.open = false;
        let destroyed = self.backend.destroy();
        released.and(destroyed)
    }

    fn is_holding(&self) -> bool {
        self.core.anything_held()
    }

    fn stats(&self) -> SinkStats {
        self.core.stats()
    }
}

impl<B: InputBackend> Drop for Sink<B> {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!("closing the input devices: {e}");
        }
    }
}

fn screen(width: u16, height: u16) -> Result<ScreenSize, InputError> {
    ScreenSize::new(width, height).ok_or(InputError::InvalidScreen { width, height })
}
