//! The API as a service of `basalt control` and `basalt up`: builds the state from `[api]`,
//! bootstraps the built-in identity's admin (writing `admin-openrc`), and serves on its own
//! tokio runtime thread until stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use basalt_identity::{Auth, Identity, IdentityConfig, KeystoneConfig, KeystoneValidator};
use basalt_manager::{ApiSection, Control};
use basalt_policy::Enforcer;

use crate::{ApiConfig, ApiState};

/// Why the API could not start.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum StartError {
    /// cannot listen on {addr}: {source}
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// the identity store: {0}
    Identity(#[from] basalt_identity::IdentityError),
    /// keystone: {0}
    Keystone(#[from] basalt_identity::AuthError),
    /// the policy file: {0}
    Policy(#[from] basalt_policy::PolicyError),
    /// {what}: {source}
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// the metadata store: {0}
    Setup(String),
}

/// A running API; stops when stopped or dropped.
#[derive(Debug)]
pub struct ApiService {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The bootstrap admin's openrc, when one was written or found.
    pub openrc: Option<PathBuf>,
}

/// The password in an openrc file (`export OS_PASSWORD=...`), if there is one.
fn openrc_password(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("export OS_PASSWORD=")?;
        let v = v.trim();
        Some(
            v.strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .map_or_else(|| v.to_owned(), |s| s.replace("'\\''", "'")),
        )
    })
}

fn random_password() -> Result<String, StartError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| StartError::Setup(e.to_string()))?;
    Ok(b.iter()
        .map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char)
        .collect())
}

impl ApiService {
    /// Starts the API over `control` as `[api]` says. `data_dir` holds the identity store
    /// unless configured otherwise; with `openrc` the built-in identity's bootstrap admin is
    /// made (or its password kept) and its credentials written there.
    ///
    /// # Errors
    /// The listener, the identity store or the policy file.
    pub fn start(
        section: &ApiSection,
        control: Arc<Control>,
        data_dir: &Path,
        openrc: Option<&Path>,
    ) -> Result<ApiService, StartError> {
        let listener =
            std::net::TcpListener::bind(&section.listen).map_err(|e| StartError::Listen {
                addr: section.listen.clone(),
                source: e,
            })?;
        listener.set_nonblocking(true).map_err(|e| StartError::Io {
            what: "listener".into(),
            source: e,
        })?;
        let addr = listener.local_addr().map_err(|e| StartError::Io {
            what: "listener".into(),
            source: e,
        })?;
        let public_url = section
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let mut identity = None;
        let mut written = None;
        let auth = match section.auth_strategy.as_str() {
            "noauth" => Auth::NoAuth {
                default_user: "admin".into(),
                default_project: "admin".into(),
            },
            "keystone" => {
                let k = section
                    .keystone
                    .as_ref()
                    .ok_or_else(|| StartError::Setup("[api.keystone] is missing".into()))?;
                Auth::Keystone(Arc::new(KeystoneValidator::new(KeystoneConfig {
                    auth_url: k.auth_url.clone(),
                    username: k.username.clone(),
                    password: k.password.clone(),
                    project_name: k.project_name.clone(),
                    user_domain: k.user_domain.clone(),
                    project_domain: k.project_domain.clone(),
                    cache_ttl_secs: k.cache_ttl_secs,
                })?))
            }
            _ => {
                let path = section
                    .identity_database
                    .clone()
                    .unwrap_or_else(|| data_dir.join("identity.db"));
                let id = Arc::new(Identity::open(
                    &path,
                    IdentityConfig {
                        public_url: public_url.clone(),
                        region: "RegionOne".into(),
                        token_ttl_secs: section.token_ttl_secs,
                    },
                )?);
                if let Some(rc) = openrc {
                    let existing = std::fs::read_to_string(rc)
                        .ok()
                        .and_then(|t| openrc_password(&t));
                    let password = match existing {
                        Some(p) => p,
                        None => random_password()?,
                    };
                    id.bootstrap("admin", &password, "admin")?;
                    let text = basalt_identity::openrc(
                        &format!("{public_url}/identity/v3"),
                        "admin",
                        &password,
                        "admin",
                        "RegionOne",
                    );
                    write_private(rc, &text)?;
                    written = Some(rc.to_path_buf());
                }
                identity = Some(id.clone());
                Auth::Builtin(id)
            }
        };
        let policy = match &section.policy_file {
            Some(p) => Enforcer::from_file(p)?,
            None => Enforcer::cinder_defaults(),
        };
        let state = Arc::new(ApiState {
            control,
            auth,
            policy,
            cfg: ApiConfig {
                public_url: Some(public_url),
                default_protocol: section.default_protocol.clone(),
                ..ApiConfig::default()
            },
            identity,
        });
        state
            .ensure_default_type()
            .map_err(|e| StartError::Setup(e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("basalt-api".into())
            .spawn(move || run(listener, state, rx))
            .map_err(|e| StartError::Io {
                what: "the API thread".into(),
                source: e,
            })?;
        tracing::info!(%addr, auth = %section.auth_strategy, "Cinder v3 API listening");
        Ok(ApiService {
            addr,
            stop: Some(tx),
            thread: Some(thread),
            openrc: written,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops serving (requests in flight get [`crate::DRAIN`] to end) and joins the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ApiService {
    fn drop(&mut self) {
        self.halt();
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| StartError::Io {
        what: format!("writing {}", path.display()),
        source: e,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn run(
    listener: std::net::TcpListener,
    state: Arc<ApiState>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_name("basalt-api-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the API runtime");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot use the API listener");
                return;
            }
        };
        // Housekeeping: expired user messages and identity tokens, hourly.
        let hk = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let s = hk.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let n = crate::messages::reap(&s);
                    let t = s
                        .identity
                        .as_ref()
                        .and_then(|i| i.purge_expired_tokens().ok())
                        .unwrap_or(0);
                    if n + t > 0 {
                        tracing::info!(messages = n, tokens = t, "expired records removed");
                    }
                })
                .await;
            }
        });
        let shutdown = async move {
            let _ = stop.await;
        };
        if let Err(e) = crate::serve(listener, state, shutdown).await {
            tracing::error!(error = %e, "the API stopped");
        }
    });
    rt.shutdown_timeout(crate::DRAIN);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openrc_passwords_read_back() {
        let rc = basalt_identity::openrc("http://h/identity/v3", "admin", "p'w d", "admin", "R");
        assert_eq!(openrc_password(&rc).as_deref(), Some("p'w d"));
        assert_eq!(
            openrc_password("export OS_PASSWORD=plain\n").as_deref(),
            Some("plain")
        );
        assert_eq!(openrc_password("nothing here"), None);
    }
}
