//! `--screen N` of the headless commands: picking one of a device's
//! screens, and telling the technician which there are.

use shoulder_proto::ScreenList;

use crate::error::ClientError;
use crate::printable::printable;

/// The screen a headless command wants (`--screen N`, 1-based) and whether
/// the device shows it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScreenChoice {
    /// 0-based; `None`: whichever the device shows first.
    wanted: Option<u8>,
    /// The device showed the wanted screen in its last list.
    shown: bool,
    /// A list arrived at all.
    listed: bool,
}

/// What to do after a list or a screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing: the frames that follow are the wanted screen's.
    Wait,
    /// Ask the device for screen `index` (0-based).
    Select(u8),
    /// The wanted screen does not exist: stop with this error.
    Fail(ClientError),
}

impl ScreenChoice {
    /// `screen`: the 1-based number from the command line.
    pub fn new(screen: Option<u8>) -> Result<Self, ClientError> {
        let wanted = match screen {
            Some(0) => {
                return Err(ClientError::Local(
                    "--screen counts from 1 (the device's first screen).".into(),
                ));
            }
            s => s.map(|n| n - 1),
        };
        Ok(Self {
            wanted,
            shown: wanted.is_none(),
            listed: false,
        })
    }

    /// The device listed its screens.
    pub fn list(&mut self, list: &ScreenList) -> Next {
        self.listed = true;
        let Some(w) = self.wanted else {
            return Next::Wait;
        };
        if usize::from(w) >= list.screens.len() {
            return Next::Fail(ClientError::Local(format!(
                "The device has no screen {}; it has: {}.",
                w + 1,
                describe(list)
            )));
        }
        self.shown = list.current == w;
        if self.shown {
            Next::Wait
        } else {
            Next::Select(w)
        }
    }

    /// A screen's info arrived: whether its frames are the wanted ones. A
    /// device that listed nothing has one screen.
    pub fn screen(&mut self) -> Result<bool, ClientError> {
        match self.wanted {
            Some(0) if !self.listed => Ok(true),
            Some(w) if !self.listed => Err(ClientError::Local(format!(
                "The device has one screen; --screen {} does not exist.",
                w + 1
            ))),
            _ => Ok(self.shown),
        }
    }
}

/// "1 HDMI-A-1 1920×1080 (shown), 2 DSI-1 800×480".
pub fn describe(list: &ScreenList) -> String {
    list.screens
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let shown = if i == usize::from(list.current) {
                " (shown)"
            } else {
                ""
            };
            format!(
                "{} {} {}×{}{shown}",
                i + 1,
                printable(&s.name),
                s.width,
                s.height
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_proto::{ScreenEntry, text};

    fn list(current: u8, n: usize) -> ScreenList {
        let mut screens = heapless::Vec::new();
        for i in 0..n {
            let _ = screens.push(ScreenEntry {
                name: text(&format!("Virtual-{}", i + 1)),
                width: 800,
                height: 600,
                x: 800 * i as u16,
                y: 0,
            });
        }
        ScreenList { current, screens }
    }

    #[test]
    fn the_second_screen_is_asked_for_and_its_frames_awaited() {
        let mut c = ScreenChoice::new(Some(2)).unwrap();
        assert_eq!(c.list(&list(0, 2)), Next::Select(1));
        assert!(!c.screen().unwrap(), "the first screen's frames are not it");
        assert_eq!(c.list(&list(1, 2)), Next::Wait);
        assert!(c.screen().unwrap());
    }

    #[test]
    fn screens_that_do_not_exist_are_named_with_those_that_do() {
        assert!(ScreenChoice::new(Some(0)).is_err());
        let mut c = ScreenChoice::new(Some(3)).unwrap();
        let Next::Fail(e) = c.list(&list(0, 2)) else {
            panic!("screen 3 of 2");
        };
        assert!(
            e.sentence()
                .contains("1 Virtual-1 800×600 (shown), 2 Virtual-2")
        );
        let mut one = ScreenChoice::new(Some(2)).unwrap();
        assert!(one.screen().is_err(), "a device with one screen lists none");
        let mut any = ScreenChoice::new(None).unwrap();
        assert!(any.screen().unwrap());
        let mut first = ScreenChoice::new(Some(1)).unwrap();
        assert!(first.screen().unwrap());
    }
}
