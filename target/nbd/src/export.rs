//! The export registry: named block devices the NBD target serves, shared by every reactor.
//!
//! [`NbdTarget`] is `Send + Sync`; the admin socket (and the control plane through the rings)
//! adds and removes exports while connections run. A connection looks its export up during
//! the handshake (the registry is the connection's [`Catalog`]) and opens the device on its
//! own reactor when transmission begins. Removing an export closes its connections: the
//! reactors holding them are sent a message, and [`Export::wait_closed`] waits until the last
//! one has let go of the device. A resize needs nothing here: NBD cannot tell a connected
//! client, and a new connection reads the size afresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_bdev::Bdev;
use basalt_engine::ReactorHandle;

use crate::conn::{Catalog, ConnConfig, ExportInfo};
use crate::error::NbdError;

/// Longest export name accepted (the protocol suggests strings of at most 256 bytes).
pub const MAX_NAME: usize = 256;

/// Checks an export name: 1 to [`MAX_NAME`] bytes, no control characters.
///
/// # Errors
/// [`NbdError::InvalidName`] saying why.
pub fn valid_name(name: &str) -> Result<(), NbdError> {
    let bad = |why| {
        Err(NbdError::InvalidName {
            name: name.chars().take(64).collect(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME {
        return bad("it is longer than 256 bytes");
    }
    if name.chars().any(char::is_control) {
        return bad("it holds control characters");
    }
    Ok(())
}

/// How an export is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// The name clients ask for.
    pub name: String,
    /// Shown to people (`NBD_INFO_DESCRIPTION`, the list of exports).
    pub description: String,
    /// Refuse writes (`NBD_FLAG_READ_ONLY`, `EPERM`).
    pub read_only: bool,
    /// The device deallocates on write-zeroes (a thin volume): a write-zeroes with
    /// `NBD_CMD_FLAG_NO_HOLE` then writes zero buffers instead, so the range stays allocated.
    pub thin: bool,
}

/// One export: a block device under a name.
#[derive(Debug)]
pub struct Export {
    /// Unique for the life of the process.
    pub id: u64,
    /// How it is offered.
    pub config: ExportConfig,
    /// The device.
    pub bdev: Arc<dyn Bdev>,
    removed: AtomicBool,
    connections: AtomicUsize,
}

impl Export {
    /// Whether the export was removed (its connections are closing).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// Connections in transmission on it.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub(crate) fn attached(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn detached(&self) {
        self.connections.fetch_sub(1, Ordering::SeqCst);
    }

    /// What a handshake learns about it: the device's size now.
    pub fn info(&self) -> ExportInfo {
        let g = self.bdev.geometry();
        ExportInfo {
            id: self.id,
            name: self.config.name.clone(),
            description: self.config.description.clone(),
            size: g.bytes(),
            block_size: g.block_size,
            preferred_block_size: g.block_size.max(4096),
            read_only: self.config.read_only,
            trim: g.supports_unmap,
        }
    }

    /// Waits (blocking, on a thread that is not a reactor) until no connection holds the
    /// device, at most `limit`; true when none does.
    pub fn wait_closed(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.connections() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// A connection in transmission: where it lives and on which export.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveConn {
    pub(crate) reactor: usize,
    pub(crate) export: u64,
}

/// The registry (see the module documentation).
#[derive(Debug)]
pub struct NbdTarget {
    /// Limits of every connection.
    pub conn: ConnConfig,
    reactors: Vec<ReactorHandle>,
    exports: Mutex<BTreeMap<String, Arc<Export>>>,
    next_id: AtomicU64,
    next_conn: AtomicU64,
    live: Mutex<HashMap<u64, LiveConn>>,
}

impl NbdTarget {
    /// An empty registry whose connections run on `reactors`.
    pub fn new(conn: ConnConfig, reactors: Vec<ReactorHandle>) -> Arc<NbdTarget> {
        Arc::new(NbdTarget {
            conn,
            reactors,
            exports: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// The reactors connections run on.
    pub fn reactors(&self) -> &[ReactorHandle] {
        &self.reactors
    }

    /// Adds an export of `bdev`.
    ///
    /// # Errors
    /// A bad name, or one in use.
    pub fn add_export(
        &self,
        config: ExportConfig,
        bdev: Arc<dyn Bdev>,
    ) -> Result<Arc<Export>, NbdError> {
        valid_name(&config.name)?;
        let mut map = self.exports.lock().expect("exports lock");
        if map.contains_key(&config.name) {
            return Err(NbdError::Exists(config.name));
        }
        let e = Arc::new(Export {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            config,
            bdev,
            removed: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        map.insert(e.config.name.clone(), e.clone());
        tracing::info!(export = %e.config.name, bdev = e.bdev.name(), read_only = e.config.read_only, "NBD export added");
        Ok(e)
    }

    /// Removes export `name` and closes its connections (asynchronously: see
    /// [`Export::wait_closed`]). New connections no longer find it.
    ///
    /// # Errors
    /// [`NbdError::NotFound`].
    pub fn remove_export(&self, name: &str) -> Result<Arc<Export>, NbdError> {
        let e = self
            .exports
            .lock()
            .expect("exports lock")
            .remove(name)
            .ok_or_else(|| NbdError::NotFound(name.to_owned()))?;
        e.removed.store(true, Ordering::SeqCst);
        let conns: Vec<(u64, usize)> = self
            .live
            .lock()
            .expect("live lock")
            .iter()
            .filter(|(_, c)| c.export == e.id)
            .map(|(id, c)| (*id, c.reactor))
            .collect();
        tracing::info!(
            export = name,
            connections = conns.len(),
            "NBD export removed"
        );
        crate::server::close_connections(self, &conns);
        Ok(e)
    }

    /// The export called `name`.
    pub fn export(&self, name: &str) -> Option<Arc<Export>> {
        self.exports
            .lock()
            .expect("exports lock")
            .get(name)
            .cloned()
    }

    /// Every export, by name.
    pub fn exports(&self) -> Vec<Arc<Export>> {
        self.exports
            .lock()
            .expect("exports lock")
            .values()
            .cloned()
            .collect()
    }

    /// The export with id `id`, if it is still there.
    pub(crate) fn export_by_id(&self, id: u64) -> Option<Arc<Export>> {
        self.exports
            .lock()
            .expect("exports lock")
            .values()
            .find(|e| e.id == id)
            .cloned()
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn register(&self, conn: u64, live: LiveConn) {
        self.live.lock().expect("live lock").insert(conn, live);
    }

    pub(crate) fn unregister(&self, conn: u64) {
        self.live.lock().expect("live lock").remove(&conn);
    }

    /// Connections in transmission, on every export.
    pub fn connection_count(&self) -> usize {
        self.live.lock().expect("live lock").len()
    }
}

impl Catalog for NbdTarget {
    fn find(&self, name: &str) -> Option<ExportInfo> {
        self.export(name).map(|e| e.info())
    }

    fn list(&self) -> Vec<ExportInfo> {
        self.exports().iter().map(|e| e.info()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("volume-0b8f6a3c").is_ok());
        assert!(valid_name("a/b c").is_ok());
        assert!(valid_name("").is_err());
        assert!(valid_name("a\0b").is_err());
        assert!(valid_name("a\nb").is_err());
        assert!(valid_name(&"x".repeat(257)).is_err());
        assert!(valid_name(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn exports_are_added_found_listed_and_removed() {
        let t = NbdTarget::new(ConnConfig::default(), Vec::new());
        let bdev: Arc<dyn Bdev> = Arc::new(
            basalt_bdev::modules::malloc::MallocBdev::new("m0", 512, 2048).expect("malloc"),
        );
        let cfg = |name: &str| ExportConfig {
            name: name.into(),
            description: "d".into(),
            read_only: false,
            thin: false,
        };
        let a = t.add_export(cfg("a"), bdev.clone()).expect("added");
        assert_eq!(
            t.add_export(cfg("a"), bdev.clone()).map(|_| ()),
            Err(NbdError::Exists("a".into()))
        );
        let b = t.add_export(cfg("b"), bdev.clone()).expect("added");
        assert_ne!(a.id, b.id);
        let info = t.find("a").expect("found");
        assert_eq!(
            (info.size, info.block_size, info.trim),
            (1 << 20, 512, true)
        );
        assert_eq!(info.preferred_block_size, 4096);
        assert_eq!(
            t.list().iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let gone = t.remove_export("a").expect("removed");
        assert!(gone.is_removed() && gone.wait_closed(Duration::from_millis(1)));
        assert!(t.find("a").is_none() && t.export_by_id(a.id).is_none());
        assert_eq!(
            t.remove_export("a").map(|_| ()),
            Err(NbdError::NotFound("a".into()))
        );
        // The name can be used again: a new export, a new id.
        let a2 = t.add_export(cfg("a"), bdev).expect("added again");
        assert_ne!(a2.id, a.id);
    }
}
