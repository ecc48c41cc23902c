//! The other end of the control socket.

use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;

use super::{ControlError, MAX_LINE, Request, send_line};

/// A control-socket client (`shoulder-agent ctl`, tests, scripts).
#[derive(Debug)]
pub struct Client {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    /// Events received while waiting for a reply.
    pending_events: std::collections::VecDeque<Value>,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        let s = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect {
                path: path.into(),
                source,
            })?;
        let (r, w) = s.into_split();
        Ok(Self {
            reader: BufReader::new(r),
            writer: w,
            pending_events: Default::default(),
        })
    }

    /// Sends a request and returns its reply (events that arrive meanwhile
    /// are kept for [`Client::next_event`]).
    pub async fn request(&mut self, req: &Request) -> Result<Value, ControlError> {
        let v = serde_json::to_value(req).map_err(|e| ControlError::BadReply(e.to_string()))?;
        send_line(&mut self.writer, &v).await?;
        loop {
            let v = self.read_value().await?;
            if v.get("reply").is_some() {
                return Ok(v);
            }
            self.pending_events.push_back(v);
        }
    }

    /// The next pushed event.
    pub async fn next_event(&mut self) -> Result<Value, ControlError> {
        if let Some(v) = self.pending_events.pop_front() {
            return Ok(v);
        }
        loop {
            let v = self.read_value().await?;
            if v.get("event").is_some() {
                return Ok(v);
            }
        }
    }

    /// Waits for an event named `name`, skipping others.
    pub async fn wait_event(&mut self, name: &str) -> Result<Value, ControlError> {
        loop {
            let v = self.next_event().await?;
            if v["event"] == name {
                return Ok(v);
            }
        }
    }

    async fn read_value(&mut self) -> Result<Value, ControlError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 * 4)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Err(ControlError::Closed);
        }
        serde_json::from_str(line.trim()).map_err(|e| ControlError::BadReply(e.to_string()))
    }
}
