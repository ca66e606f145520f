//! How a volume manager reaches its datapath node.
//!
//! The requests are the datapath's JSON operations (`datapath/daemon/src/admin.rs` lists
//! them); every create is idempotent on the datapath side, so a request whose answer was lost
//! is simply sent again. [`Datapath`] hides the transport: [`AdminSocket`] speaks to the
//! datapath's local admin socket, one connection per request; the shared-memory rings carry the
//! same requests.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a datapath request failed.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum DpError {
    /// the datapath cannot be reached: {0}
    Unreachable(String),
    /// the datapath refused ({code}): {message}
    Failed {
        /// The datapath's error class (`not_found`, `exists`, `no_space`, `busy`, ...).
        code: String,
        /// Its message.
        message: String,
    },
    /// the datapath answered something that is not an answer: {0}
    BadAnswer(String),
}

impl DpError {
    /// The datapath said the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DpError::Failed { code, .. } if code == "not_found")
    }

    /// Trying elsewhere (another pool) may work: the node is unreachable or out of space.
    pub fn reschedulable(&self) -> bool {
        match self {
            DpError::Unreachable(_) => true,
            DpError::Failed { code, .. } => code == "no_space",
            DpError::BadAnswer(_) => false,
        }
    }
}

/// A datapath node's request channel.
pub trait Datapath: Send + Sync + std::fmt::Debug {
    /// Sends one request and waits for its answer (`{"ok": true, ...}`).
    ///
    /// # Errors
    /// The node cannot be reached, or it refused ([`DpError::Failed`] with its code).
    fn call(&self, request: &serde_json::Value) -> Result<serde_json::Value, DpError>;

    /// Events the datapath sent on its own since the last call (store nearly full, store
    /// failed, ...), oldest first. Transports without events have none.
    fn take_events(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

/// Turns a datapath answer line into a result.
///
/// # Errors
/// `ok` is false ([`DpError::Failed`]) or the answer is not one.
pub fn parse_answer(line: &[u8]) -> Result<serde_json::Value, DpError> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| DpError::BadAnswer(e.to_string()))?;
    match v.get("ok").and_then(serde_json::Value::as_bool) {
        Some(true) => Ok(v),
        Some(false) => Err(DpError::Failed {
            code: v
                .get("code")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("error")
                .to_owned(),
            message: v
                .get("error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_owned(),
        }),
        None => Err(DpError::BadAnswer(format!("no \"ok\" in {v}"))),
    }
}

/// The datapath's local admin socket.
#[derive(Debug, Clone)]
pub struct AdminSocket {
    path: PathBuf,
    timeout: Duration,
}

impl AdminSocket {
    /// A channel to the socket at `path`; a request that gets no answer within `timeout`
    /// fails as unreachable.
    pub fn new(path: &Path, timeout: Duration) -> AdminSocket {
        AdminSocket {
            path: path.to_owned(),
            timeout,
        }
    }
}

impl Datapath for AdminSocket {
    fn call(&self, request: &serde_json::Value) -> Result<serde_json::Value, DpError> {
        let unreachable =
            |e: std::io::Error| DpError::Unreachable(format!("{}: {e}", self.path.display()));
        let mut s = UnixStream::connect(&self.path).map_err(unreachable)?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        s.set_write_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        writeln!(s, "{request}").map_err(unreachable)?;
        let mut line = Vec::new();
        BufReader::new(s)
            .read_until(b'\n', &mut line)
            .map_err(unreachable)?;
        if line.is_empty() {
            return Err(DpError::Unreachable(format!(
                "{}: closed without answering",
                self.path.display()
            )));
        }
        parse_answer(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_into_results() {
        assert_eq!(parse_answer(br#"{"ok":true,"id":3}"#).expect("ok")["id"], 3);
        let e = parse_answer(
            br#"{"ok":false,"code":"not_found","error":"volume pool/x does not exist"}"#,
        )
        .expect_err("refused");
        assert!(e.is_not_found());
        assert!(!e.reschedulable());
        let e = parse_answer(br#"{"ok":false,"code":"no_space","error":"the store is full"}"#)
            .expect_err("refused");
        assert!(e.reschedulable());
        assert!(matches!(
            parse_answer(b"garbage"),
            Err(DpError::BadAnswer(_))
        ));
        assert!(matches!(parse_answer(b"{}"), Err(DpError::BadAnswer(_))));
    }

    #[test]
    fn a_missing_socket_is_unreachable() {
        let s = AdminSocket::new(
            Path::new("/nonexistent/basalt.sock"),
            Duration::from_secs(1),
        );
        let e = s
            .call(&serde_json::json!({"op": "ping"}))
            .expect_err("no socket");
        assert!(matches!(e, DpError::Unreachable(_)));
        assert!(e.reschedulable());
    }
}
