//! `basalt`: one binary, one subcommand per process role.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use basalt_bdev::ByteSize;
use basalt_datapath::{Datapath, DatapathConfig, ShutdownSignals};
use basalt_lvol::disk::FileDisk;
use basalt_lvol::store::Store;
use basalt_manager::{ControlConfig, ControlService};
use clap::{Args, Parser, Subcommand};

/// Basalt: block storage for clouds, served from a thread-per-core io_uring data path.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive list such
    /// as `info,basalt_bdev=debug`. RUST_LOG, when set, wins.
    #[arg(long, global = true, default_value = "info", value_name = "FILTER")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything on this machine with embedded defaults.
    ///
    /// Creates the data directory if needed, a sparse file-backed pool in it
    /// (`<data-dir>/pool.img`) and a datapath configuration (`<data-dir>/datapath.toml`) that
    /// you may edit; then runs the datapath in the foreground until Ctrl-C or SIGTERM.
    ///
    /// `up` runs the datapath (the engine, the pool, a volume store on it (`pool`), an iSCSI
    /// portal on 127.0.0.1:3260, NVMe/TCP on 127.0.0.1:4420, NBD on 127.0.0.1:10809 and the
    /// admin socket `<data-dir>/datapath.sock`), the control plane (the metadata store
    /// `<data-dir>/basalt.db`, the scheduler and the volume manager of this node, configured
    /// in `<data-dir>/control.toml`) and the Cinder v3 API on 127.0.0.1:8776 with the
    /// built-in identity at /identity/v3. The bootstrap admin's credentials are written to
    /// `<data-dir>/admin-openrc`: `source basalt-data/admin-openrc && openstack volume list`.
    /// NBD has no authentication (Basalt offers no TLS), so it stays on loopback: exports
    /// are added with `basalt admin` ('{"op":"nbd_export_add","name":"v1","volume":"pool/v1"}')
    /// and reached as nbd://127.0.0.1:10809/v1.
    Up(UpArgs),

    /// Run the control plane in the foreground until Ctrl-C or SIGTERM.
    ///
    /// It opens the metadata store, takes on the datapath nodes listed in the configuration
    /// (see docs/operations.md), finishes or undoes operations a restart interrupted,
    /// restores the nodes' exports, every stats interval gathers their pool reports for the
    /// scheduler, and serves the Cinder v3 API as its [api] table says (127.0.0.1:8776 with
    /// the built-in identity by default).
    Control(ControlArgs),

    /// Manage the built-in identity's users, projects and roles (a Keystone v3 subset).
    ///
    /// Works on the identity database directly, also while the API runs. Example:
    /// `basalt identity project create demo`, `basalt identity user create alice --password
    /// secret --project demo`, `basalt identity role add alice demo member`.
    #[command(subcommand)]
    Identity(IdentityCommand),

    /// Run the datapath daemon in the foreground until Ctrl-C or SIGTERM.
    ///
    /// Settings come from the TOML file given with --config (see docs/operations.md for every
    /// key); the flags below override the file.
    Datapath(DatapathArgs),

    /// Look at and manage a volume store offline (the daemon must not have it open).
    #[command(subcommand)]
    Lvol(LvolCommand),

    /// Send one request to a running datapath's admin socket and print the answer.
    ///
    /// The request is a JSON object with an "op" field, for example
    /// '{"op":"iscsi_target_list"}' or
    /// '{"op":"iscsi_target_add","name":"iqn.2026-11.org.basalt:v1","lun":[{"lun":0,"volume":"pool/v1"}]}'.
    /// Every operation is listed in docs/operations.md. Exits non-zero when the datapath
    /// refuses the request.
    Admin(AdminArgs),
}

/// `basalt control`.
#[derive(Debug, Args)]
struct ControlArgs {
    /// Configuration file (TOML): [control] and one [[node]] table per datapath.
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
}

/// `basalt identity ...`.
#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Role assignments.
    #[command(subcommand)]
    Role(RoleCommand),
}

/// Where the identity database is.
#[derive(Debug, Args)]
struct IdentityDb {
    /// The identity database (`[api] identity_database`).
    #[arg(long, default_value = "basalt-data/identity.db", value_name = "PATH")]
    database: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// Create a project.
    Create {
        /// Its name.
        name: String,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        db: IdentityDb,
    },
    /// List projects.
    List {
        #[command(flatten)]
        db: IdentityDb,
    },
    /// Delete a project (by name or id).
    Delete {
        /// Name or id.
        project: String,
        #[command(flatten)]
        db: IdentityDb,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user.
    Create {
        /// Its name.
        name: String,
        /// Its password.
        #[arg(long)]
        password: String,
        /// Its default project (name or id).
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        db: IdentityDb,
    },
    /// List users.
    List {
        #[command(flatten)]
        db: IdentityDb,
    },
    /// Set a user's password.
    SetPassword {
        /// Name or id.
        user: String,
        /// The new password.
        #[arg(long)]
        password: String,
        #[command(flatten)]
        db: IdentityDb,
    },
    /// Delete a user (by name or id).
    Delete {
        /// Name or id.
        user: String,
        #[command(flatten)]
        db: IdentityDb,
    },
}

#[derive(Debug, Subcommand)]
enum RoleCommand {
    /// Give a user a role on a project (admin, member, reader, service).
    Add {
        /// User name or id.
        user: String,
        /// Project name or id.
        project: String,
        /// Role name.
        role: String,
        #[command(flatten)]
        db: IdentityDb,
    },
    /// Take a role back.
    Remove {
        /// User name or id.
        user: String,
        /// Project name or id.
        project: String,
        /// Role name.
        role: String,
        #[command(flatten)]
        db: IdentityDb,
    },
    /// List role assignments.
    List {
        #[command(flatten)]
        db: IdentityDb,
    },
}

fn open_identity(db: &IdentityDb) -> Result<basalt_identity::Identity> {
    if !db.database.exists() {
        bail!(
            "{} does not exist (start `basalt up` or `basalt control` once, or pass --database)",
            db.database.display()
        );
    }
    Ok(basalt_identity::Identity::open(
        &db.database,
        basalt_identity::IdentityConfig::default(),
    )?)
}

fn identity(cmd: IdentityCommand) -> Result<()> {
    match cmd {
        IdentityCommand::Project(ProjectCommand::Create {
            name,
            description,
            db,
        }) => {
            let p = open_identity(&db)?.create_project(&name, description.as_deref())?;
            println!("{}\t{}", p.id, p.name);
        }
        IdentityCommand::Project(ProjectCommand::List { db }) => {
            for p in open_identity(&db)?.list_projects()? {
                println!("{}\t{}", p.id, p.name);
            }
        }
        IdentityCommand::Project(ProjectCommand::Delete { project, db }) => {
            open_identity(&db)?.delete_project(&project)?;
        }
        IdentityCommand::User(UserCommand::Create {
            name,
            password,
            project,
            db,
        }) => {
            let u = open_identity(&db)?.create_user(&name, &password, project.as_deref())?;
            println!("{}\t{}", u.id, u.name);
        }
        IdentityCommand::User(UserCommand::List { db }) => {
            for u in open_identity(&db)?.list_users()? {
                println!("{}\t{}", u.id, u.name);
            }
        }
        IdentityCommand::User(UserCommand::SetPassword { user, password, db }) => {
            open_identity(&db)?.set_password(&user, &password)?;
        }
        IdentityCommand::User(UserCommand::Delete { user, db }) => {
            open_identity(&db)?.delete_user(&user)?;
        }
        IdentityCommand::Role(RoleCommand::Add {
            user,
            project,
            role,
            db,
        }) => open_identity(&db)?.grant_role(&user, &project, &role)?,
        IdentityCommand::Role(RoleCommand::Remove {
            user,
            project,
            role,
            db,
        }) => open_identity(&db)?.revoke_role(&user, &project, &role)?,
        IdentityCommand::Role(RoleCommand::List { db }) => {
            let id = open_identity(&db)?;
            for a in id.role_assignments()? {
                println!("{}\t{}\t{}", a.user_name, a.project_name, a.role_name);
            }
        }
    }
    Ok(())
}

/// `basalt admin`.
#[derive(Debug, Args)]
struct AdminArgs {
    /// The datapath's admin socket ([admin] socket in its configuration).
    #[arg(long, default_value = "basalt-data/datapath.sock", value_name = "PATH")]
    socket: PathBuf,
    /// The request, as one JSON object.
    request: String,
}

fn admin(args: &AdminArgs) -> Result<()> {
    let answer = basalt_datapath::admin::request(&args.socket, &args.request)
        .with_context(|| format!("cannot reach the admin socket {}", args.socket.display()))?;
    println!("{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer)
        .context("the datapath answered something that is not JSON")?;
    if v.get("ok") != Some(&serde_json::Value::Bool(true)) {
        bail!("the datapath refused the request");
    }
    Ok(())
}

/// Where a volume store lives.
#[derive(Debug, Args)]
struct StorePath {
    /// The file or block device holding the store.
    #[arg(long, value_name = "PATH")]
    path: PathBuf,
}

#[derive(Debug, Subcommand)]
enum LvolCommand {
    /// Write a new, empty volume store on a file or device (refuses to overwrite a store
    /// unless --force).
    Create {
        #[command(flatten)]
        store: StorePath,
        /// Name of the store (1 to 64 bytes).
        #[arg(long)]
        name: String,
        /// Allocation unit: a power of two from 64K to 64M (see docs/lvstore.md).
        #[arg(long, default_value = "1M", value_name = "SIZE")]
        cluster_size: ByteSize,
        /// Logical block size of the volumes: 512 or 4096.
        #[arg(long, default_value_t = 512, value_name = "BYTES")]
        block_size: u32,
        /// Overwrite an existing store.
        #[arg(long)]
        force: bool,
    },
    /// The store's superblock and space usage.
    Inspect {
        #[command(flatten)]
        store: StorePath,
    },
    /// Every volume, snapshot and clone.
    List {
        #[command(flatten)]
        store: StorePath,
    },
    /// Verify the store; exits 1 and lists every problem found.
    Check {
        #[command(flatten)]
        store: StorePath,
    },
    /// Take in the space the file or device gained since the store was created (grow the file
    /// or device first, e.g. with `truncate -s` or `lvextend`).
    Grow {
        #[command(flatten)]
        store: StorePath,
    },
    /// Create a thin volume.
    VolumeCreate {
        #[command(flatten)]
        store: StorePath,
        /// Name of the new volume.
        #[arg(long)]
        name: String,
        /// Size (suffixes K, M, G, T).
        #[arg(long, value_name = "SIZE")]
        size: ByteSize,
    },
    /// Snapshot a volume (read-only, O(1)).
    Snapshot {
        #[command(flatten)]
        store: StorePath,
        /// The volume to snapshot.
        #[arg(long, value_name = "NAME")]
        volume: String,
        /// Name of the snapshot.
        #[arg(long)]
        name: String,
    },
    /// Clone a volume or snapshot (writable, O(1)).
    Clone {
        #[command(flatten)]
        store: StorePath,
        /// The volume or snapshot to clone.
        #[arg(long, value_name = "NAME")]
        volume: String,
        /// Name of the clone.
        #[arg(long)]
        name: String,
    },
    /// Delete a volume, snapshot or clone (space nothing else shares is freed).
    Delete {
        #[command(flatten)]
        store: StorePath,
        /// The volume to delete.
        #[arg(long, value_name = "NAME")]
        volume: String,
    },
    /// Revert a volume to one of its snapshots (its current contents are discarded).
    ///
    /// The snapshot must have been taken of this volume, and the volume must be writable and
    /// still have the snapshot's size (a volume resized since the snapshot cannot be reverted
    /// to it). The snapshot is kept; space only the discarded contents used is freed.
    Revert {
        #[command(flatten)]
        store: StorePath,
        /// The volume to revert.
        #[arg(long, value_name = "NAME")]
        volume: String,
        /// The snapshot of that volume to go back to.
        #[arg(long, value_name = "NAME")]
        snapshot: String,
    },
    /// Grow a volume (sizes never shrink).
    ///
    /// Snapshots and read-only volumes cannot be resized. The new size must be a multiple of
    /// the store's block size. A resized volume can no longer be reverted to the snapshots
    /// taken before.
    Resize {
        #[command(flatten)]
        store: StorePath,
        /// The volume to grow.
        #[arg(long, value_name = "NAME")]
        volume: String,
        /// The new size, at least the current one (suffixes K, M, G, T).
        #[arg(long, value_name = "SIZE")]
        size: ByteSize,
    },
    /// Rename a volume, snapshot or clone (its id, contents and lineage stay).
    Rename {
        #[command(flatten)]
        store: StorePath,
        /// The volume to rename.
        #[arg(long, value_name = "NAME")]
        volume: String,
        /// The new name (1 to 64 bytes, not taken by another volume).
        #[arg(long)]
        name: String,
    },
    /// Make a volume or clone read-only, or writable again with --off.
    ///
    /// Snapshots are always read-only: --off refuses them (clone a snapshot for a writable
    /// copy).
    ReadOnly {
        #[command(flatten)]
        store: StorePath,
        /// The volume to change.
        #[arg(long, value_name = "NAME")]
        volume: String,
        /// Clear the read-only flag instead of setting it.
        #[arg(long)]
        off: bool,
    },
    /// Set, get, unset or list a volume's key/value properties.
    #[command(subcommand)]
    Property(PropertyCommand),
}

/// `basalt lvol property ...`.
#[derive(Debug, Subcommand)]
enum PropertyCommand {
    /// Set a property (replacing any value it had).
    Set {
        #[command(flatten)]
        store: StorePath,
        /// The volume the property belongs to.
        #[arg(long, value_name = "NAME")]
        volume: String,
        /// The property's key (1 to 255 bytes).
        #[arg(long)]
        key: String,
        /// The value: text as given, or bytes in hexadecimal with --hex.
        #[arg(long)]
        value: String,
        /// The value is hexadecimal (e.g. `00ff10`), for binary values.
        #[arg(long)]
        hex: bool,
    },
    /// Print a property's value; exits 1 if the volume has no such property.
    ///
    /// Text is printed as it is. A value that is not UTF-8 or holds control characters
    /// (newlines included) is printed as `hex:` followed by its bytes in hexadecimal; --hex
    /// prints every value as bare hexadecimal.
    Get {
        #[command(flatten)]
        store: StorePath,
        /// The volume the property belongs to.
        #[arg(long, value_name = "NAME")]
        volume: String,
        /// The property's key.
        #[arg(long)]
        key: String,
        /// Print the value as bare hexadecimal, whatever it holds.
        #[arg(long)]
        hex: bool,
    },
    /// Remove a property; exits 1 if the volume has no such property.
    Unset {
        #[command(flatten)]
        store: StorePath,
        /// The volume the property belongs to.
        #[arg(long, value_name = "NAME")]
        volume: String,
        /// The property's key.
        #[arg(long)]
        key: String,
    },
    /// Every property of a volume, one per line, sorted by key.
    ///
    /// Values are shown as `property get` prints them: text as it is, anything else as `hex:`
    /// and hexadecimal.
    List {
        #[command(flatten)]
        store: StorePath,
        /// The volume whose properties to list.
        #[arg(long, value_name = "NAME")]
        volume: String,
    },
}

#[derive(Debug, Args)]
struct EngineFlags {
    /// Number of reactors, one thread each, pinned to the first N CPUs this process may use
    /// (its affinity mask; with --no-pin, N unpinned threads). Overrides `engine.cores` and
    /// `engine.cpus`.
    #[arg(long, value_name = "N", conflicts_with = "cpus")]
    cores: Option<usize>,

    /// Comma-separated CPUs to run one reactor each on, e.g. `2,3`. Overrides `engine.cores`
    /// and `engine.cpus`.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    cpus: Option<Vec<usize>>,

    /// Do not pin reactor threads to their CPUs (for shared or oversubscribed machines).
    #[arg(long)]
    no_pin: bool,

    /// Spin when idle instead of sleeping in the kernel: lowest latency, but each reactor then
    /// keeps its core 100% busy.
    #[arg(long)]
    busy_poll: bool,
}

impl EngineFlags {
    fn apply(&self, cfg: &mut DatapathConfig) {
        if let Some(n) = self.cores {
            cfg.engine.cores = Some(n);
            cfg.engine.cpus = None;
        }
        if let Some(list) = &self.cpus {
            cfg.engine.cpus = Some(list.clone());
            cfg.engine.cores = None;
        }
        if self.no_pin {
            cfg.engine.pin = false;
        }
        if self.busy_poll {
            cfg.engine.busy_poll = true;
        }
    }
}

#[derive(Debug, Args)]
struct DatapathArgs {
    /// Configuration file (TOML). Without it: one reactor on the first CPU this process may
    /// use, and no block devices.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    engine: EngineFlags,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Where Basalt keeps its state: the pool file and the generated configuration.
    #[arg(long, value_name = "DIR", default_value = "./basalt-data")]
    data_dir: PathBuf,

    /// Size of the file-backed pool created on first start (sparse: space is used only as
    /// data is written). Accepts suffixes K, M, G, T (powers of 1024). An existing pool keeps
    /// its size.
    #[arg(long, value_name = "SIZE", default_value = "10G")]
    pool_size: ByteSize,

    #[command(flatten)]
    engine: EngineFlags,
}

fn main() {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Up(args) => up(&args),
        Command::Datapath(args) => datapath(&args),
        Command::Control(args) => control(&args),
        Command::Identity(cmd) => identity(cmd),
        Command::Lvol(cmd) => lvol(cmd),
        Command::Admin(a) => admin(&a),
    };
    if let Err(e) = result {
        eprintln!("basalt: error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // RUST_LOG wins when it is set to something; an empty RUST_LOG counts as unset.
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| EnvFilter::try_new(v).map_err(|e| e.to_string()));
    let filter = from_env
        .unwrap_or_else(|| Err(String::new()))
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|e| {
            eprintln!("basalt: bad --log filter ({e}); using `info`");
            EnvFilter::new("info")
        });
    // Colour only on a terminal, and never when NO_COLOR is set.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn datapath(args: &DatapathArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(path) => DatapathConfig::load(path)?,
        None => DatapathConfig::default(),
    };
    args.engine.apply(&mut cfg);
    serve(&cfg)
}

fn serve(cfg: &DatapathConfig) -> Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let dp = Datapath::start(cfg)?;
    let sig = signals.wait();
    tracing::info!(signal = sig, "shutting down");
    dp.shutdown();
    Ok(())
}

fn control(args: &ControlArgs) -> Result<()> {
    let cfg = ControlConfig::load(&args.config)?;
    let mut signals = ShutdownSignals::install()?;
    let svc = ControlService::start(&cfg)?;
    let api = start_api(&cfg, &svc, None)?;
    let sig = signals.wait();
    tracing::info!(signal = sig, "shutting down");
    if let Some(a) = api {
        a.stop();
    }
    svc.stop();
    Ok(())
}

/// Starts the API of `[api]` (unless disabled) beside the control plane.
fn start_api(
    cfg: &ControlConfig,
    svc: &ControlService,
    openrc: Option<&Path>,
) -> Result<Option<basalt_api::ApiService>> {
    if !cfg.api.enabled {
        return Ok(None);
    }
    let dir = cfg
        .control
        .database
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let api = basalt_api::ApiService::start(&cfg.api, svc.control().clone(), &dir, openrc)
        .context("cannot start the API")?;
    Ok(Some(api))
}

/// This machine's host name, for the node's address (`host@basalt#pool`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(['@', '#']) && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The control-plane configuration `up` writes on first start.
fn default_control_toml(dir: &Path) -> String {
    let s = |p: &str| toml::Value::String(dir.join(p).display().to_string());
    format!(
        "# Written by `basalt up` on first start; edit freely. Every key: docs/operations.md.\n\
         [control]\n\
         database = {db}\n\
         stats_interval_secs = 10\n\
         service_down_time_secs = 60\n\
         \n\
         # This machine's datapath (datapath.toml beside this file).\n\
         [[node]]\n\
         host = {host}\n\
         lvs = \"pool\"\n\
         ring_socket = {sock}\n\
         iscsi_portal = \"127.0.0.1:3260\"\n\
         nvmf_portal = \"127.0.0.1:4420\"\n\
         # NBD exports are for this host only (no authentication without TLS).\n\
         nbd_portal = \"127.0.0.1:10809\"\n\
         \n\
         # The Cinder v3 API, with the built-in identity at /identity/v3.\n\
         [api]\n\
         listen = \"127.0.0.1:8776\"\n\
         auth_strategy = \"builtin\"\n",
        db = s("basalt.db"),
        host = toml::Value::String(host_name()),
        sock = s("ring.sock"),
    )
}

/// Opens the store on `path` writable, applies `f`, commits, and prints what `f` says it did.
fn change(path: &Path, f: impl FnOnce(&mut Store) -> Result<String>) -> Result<()> {
    let (mut disk, mut store) = open_store(path, true)?;
    let done = f(&mut store)?;
    store.commit(&mut disk)?;
    println!("{done}");
    Ok(())
}

/// Opens the volume store on `path`.
fn open_store(path: &Path, writable: bool) -> Result<(FileDisk, Store)> {
    let mut disk = FileDisk::open(path, writable)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let store = Store::open(&mut disk)
        .with_context(|| format!("{} holds no usable volume store", path.display()))?;
    Ok((disk, store))
}

/// The id of the volume named `name`.
fn find_volume(store: &Store, name: &str) -> Result<u64> {
    store
        .find(name)
        .map(|v| v.record.id)
        .with_context(|| format!("no volume named {name:?}"))
}

fn lvol(cmd: LvolCommand) -> Result<()> {
    match cmd {
        LvolCommand::Create {
            store: StorePath { path },
            name,
            cluster_size,
            block_size,
            force,
        } => {
            let mut disk = FileDisk::open(&path, true)
                .with_context(|| format!("cannot open {}", path.display()))?;
            if !force && Store::open(&mut disk).is_ok() {
                bail!(
                    "{} already holds a volume store (use --force to overwrite it)",
                    path.display()
                );
            }
            let cluster = u32::try_from(cluster_size.0).context("--cluster-size is too large")?;
            let store = Store::create(&mut disk, &name, cluster, block_size)?;
            let sb = store.superblock();
            println!(
                "created store {:?} on {}: {} clusters of {} bytes",
                sb.name,
                path.display(),
                sb.total_clusters,
                sb.cluster_size
            );
        }
        LvolCommand::Inspect {
            store: StorePath { path },
        } => {
            let (_, store) = open_store(&path, false)?;
            let sb = store.superblock();
            let space = store.forest().space();
            println!("store        {}", sb.name);
            println!("uuid         {}", hex(&sb.uuid));
            println!("generation   {}", sb.generation);
            println!("block size   {}", sb.block_size);
            println!("cluster size {}", sb.cluster_size);
            println!(
                "clusters     {} total, {} used, {} free",
                sb.total_clusters,
                space.used_clusters(),
                space.free_clusters()
            );
            println!("meta pages   {}", space.used_pages());
            println!("provisioned  {} bytes", sb.provisioned_bytes);
            println!("volumes      {}", store.volumes().count());
        }
        LvolCommand::List {
            store: StorePath { path },
        } => {
            let (_, store) = open_store(&path, false)?;
            println!(
                "{:>6}  {:<24} {:>16}  {:<10} {:>6}",
                "ID", "NAME", "SIZE", "KIND", "PARENT"
            );
            for v in store.volumes() {
                let r = &v.record;
                let kind = if r.flags & basalt_lvol::format::VOLUME_SNAPSHOT != 0 {
                    "snapshot"
                } else if r.flags & basalt_lvol::format::VOLUME_READ_ONLY != 0 {
                    "read-only"
                } else {
                    "volume"
                };
                let parent = if r.parent_id == 0 {
                    "-".to_owned()
                } else {
                    r.parent_id.to_string()
                };
                println!(
                    "{:>6}  {:<24} {:>16}  {:<10} {:>6}",
                    r.id, r.name, r.size_bytes, kind, parent
                );
            }
        }
        LvolCommand::Grow {
            store: StorePath { path },
        } => {
            let (mut disk, mut store) = open_store(&path, true)?;
            let before = store.superblock().total_clusters;
            let size = basalt_lvol::store::MetaDisk::size_bytes(&disk);
            let after = store
                .grow_store(size)
                .with_context(|| format!("cannot grow the store on {}", path.display()))?;
            store.commit(&mut disk).context("cannot commit")?;
            println!(
                "store {:?} has {after} clusters (was {before}): {} bytes added",
                store.superblock().name,
                (after - before) * u64::from(store.superblock().cluster_size)
            );
        }
        LvolCommand::Check {
            store: StorePath { path },
        } => {
            let mut disk = FileDisk::open(&path, false)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let store = match Store::open(&mut disk) {
                Ok(s) => s,
                Err(e) => {
                    println!("PROBLEM: {e}");
                    std::process::exit(1);
                }
            };
            let report = store.check();
            for n in &report.notes {
                println!("note: {n}");
            }
            for p in &report.problems {
                println!("PROBLEM: {p}");
            }
            if !report.problems.is_empty() {
                std::process::exit(1);
            }
            println!(
                "store {:?} is consistent: {} volumes, generation {}",
                store.superblock().name,
                store.volumes().count(),
                store.superblock().generation
            );
        }
        LvolCommand::VolumeCreate {
            store: StorePath { path },
            name,
            size,
        } => {
            change(&path, |store| {
                let id = store.create_volume(&name, size.0)?;
                Ok(format!("created volume {name:?} (id {id})"))
            })?;
        }
        LvolCommand::Snapshot {
            store: StorePath { path },
            volume,
            name,
        } => {
            change(&path, |store| {
                let id = store.snapshot(find_volume(store, &volume)?, &name)?;
                Ok(format!("created snapshot {name:?} (id {id}) of {volume:?}"))
            })?;
        }
        LvolCommand::Clone {
            store: StorePath { path },
            volume,
            name,
        } => {
            change(&path, |store| {
                let id = store.clone_volume(find_volume(store, &volume)?, &name)?;
                Ok(format!("created clone {name:?} (id {id}) of {volume:?}"))
            })?;
        }
        LvolCommand::Delete {
            store: StorePath { path },
            volume,
        } => {
            let (mut disk, mut store) = open_store(&path, true)?;
            store.delete(find_volume(&store, &volume)?)?;
            store.commit(&mut disk)?;
            println!("deleted {volume:?}");
        }
        LvolCommand::Revert {
            store: StorePath { path },
            volume,
            snapshot,
        } => {
            let (mut disk, mut store) = open_store(&path, true)?;
            let id = find_volume(&store, &volume)?;
            let snap = store
                .find(&snapshot)
                .with_context(|| format!("no snapshot named {snapshot:?}"))?;
            if snap.record.flags & basalt_lvol::format::VOLUME_SNAPSHOT == 0 {
                bail!("cannot revert {volume:?} to {snapshot:?}: {snapshot:?} is not a snapshot");
            }
            if snap.record.parent_id != id {
                let of = store
                    .volume(snap.record.parent_id)
                    .map_or("a deleted volume".to_owned(), |p| {
                        format!("{:?}", p.record.name)
                    });
                bail!(
                    "cannot revert {volume:?} to {snapshot:?}: that is a snapshot of {of}, \
                     not of {volume:?}"
                );
            }
            let snap = snap.record.id;
            store
                .revert(id, snap)
                .with_context(|| format!("cannot revert {volume:?} to {snapshot:?}"))?;
            store.commit(&mut disk)?;
            println!("reverted {volume:?} to snapshot {snapshot:?}");
        }
        LvolCommand::Resize {
            store: StorePath { path },
            volume,
            size,
        } => {
            let (mut disk, mut store) = open_store(&path, true)?;
            let id = find_volume(&store, &volume)?;
            let from = store.volume(id)?.record.size_bytes;
            store
                .resize(id, size.0)
                .with_context(|| format!("cannot resize {volume:?}"))?;
            store.commit(&mut disk)?;
            println!("resized {volume:?} from {from} to {} bytes", size.0);
        }
        LvolCommand::Rename {
            store: StorePath { path },
            volume,
            name,
        } => {
            let (mut disk, mut store) = open_store(&path, true)?;
            store
                .rename(find_volume(&store, &volume)?, &name)
                .with_context(|| format!("cannot rename {volume:?} to {name:?}"))?;
            store.commit(&mut disk)?;
            println!("renamed {volume:?} to {name:?}");
        }
        LvolCommand::ReadOnly {
            store: StorePath { path },
            volume,
            off,
        } => {
            let (mut disk, mut store) = open_store(&path, true)?;
            let state = if off { "writable" } else { "read-only" };
            store
                .set_read_only(find_volume(&store, &volume)?, !off)
                .with_context(|| format!("cannot make {volume:?} {state}"))?;
            store.commit(&mut disk)?;
            println!("{volume:?} is now {state}");
        }
        LvolCommand::Property(cmd) => property(cmd)?,
    }
    Ok(())
}

/// `basalt lvol property ...`.
fn property(cmd: PropertyCommand) -> Result<()> {
    match cmd {
        PropertyCommand::Set {
            store: StorePath { path },
            volume,
            key,
            value,
            hex,
        } => {
            let bytes = if hex {
                unhex(&value).context("--value is not hexadecimal (--hex was given)")?
            } else {
                value.into_bytes()
            };
            let (mut disk, mut store) = open_store(&path, true)?;
            store
                .set_property(find_volume(&store, &volume)?, &key, Some(&bytes))
                .with_context(|| format!("cannot set property {key:?} of {volume:?}"))?;
            store.commit(&mut disk)?;
            println!(
                "set property {} of {volume:?} ({} bytes)",
                show_key(&key),
                bytes.len()
            );
        }
        PropertyCommand::Get {
            store: StorePath { path },
            volume,
            key,
            hex: as_hex,
        } => {
            let (_, store) = open_store(&path, false)?;
            let v = store.volume(find_volume(&store, &volume)?)?;
            let value = v
                .properties
                .get(&key)
                .with_context(|| format!("{volume:?} has no property {key:?}"))?;
            if as_hex {
                println!("{}", hex(value));
            } else {
                println!("{}", show_value(value));
            }
        }
        PropertyCommand::Unset {
            store: StorePath { path },
            volume,
            key,
        } => {
            let (mut disk, mut store) = open_store(&path, true)?;
            let id = find_volume(&store, &volume)?;
            if !store.volume(id)?.properties.contains_key(&key) {
                bail!("{volume:?} has no property {key:?}");
            }
            store
                .set_property(id, &key, None)
                .with_context(|| format!("cannot unset property {key:?} of {volume:?}"))?;
            store.commit(&mut disk)?;
            println!("unset property {} of {volume:?}", show_key(&key));
        }
        PropertyCommand::List {
            store: StorePath { path },
            volume,
        } => {
            let (_, store) = open_store(&path, false)?;
            let v = store.volume(find_volume(&store, &volume)?)?;
            println!("{:<24} VALUE", "KEY");
            for (key, value) in &v.properties {
                println!("{:<24} {}", show_key(key), show_value(value));
            }
        }
    }
    Ok(())
}

/// A property key for display: control characters escaped, so that it stays on one line.
fn show_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A property value for display: text without control characters as it is, anything else as
/// `hex:` and its bytes in hexadecimal.
fn show_value(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => format!("hex:{}", hex(value)),
    }
}

/// Bytes from hexadecimal digits (either case, an even number of them).
fn unhex(text: &str) -> Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        bail!("{text:?} has an odd number of digits");
    }
    let digit = |b: u8| {
        char::from(b)
            .to_digit(16)
            .with_context(|| format!("{text:?} holds a character that is not a hex digit"))
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Ok(u8::try_from(digit(pair[0])? << 4 | digit(pair[1])?)?))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where `up`'s datapath listens, as printed at start: iSCSI, NVMe/TCP and NBD.
fn up_ports(cfg: &DatapathConfig) -> String {
    let list = |what: &str, addrs: &[std::net::SocketAddr]| {
        let a: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        format!("{what} {}", a.join(" "))
    };
    let mut parts = Vec::new();
    if let Some(i) = &cfg.iscsi {
        parts.push(list("iSCSI", &i.listen));
    }
    if let Some(n) = &cfg.nvmf {
        parts.push(list("NVMe/TCP", &n.listen));
    }
    if let Some(n) = &cfg.nbd {
        parts.push(list("NBD", &n.listen));
    }
    if parts.is_empty() {
        "no target ports".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The configuration `up` writes on first start.
fn default_datapath_toml(pool: &Path) -> String {
    let cores = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(2);
    format!(
        "# Written by `basalt up` on first start; edit freely. Every key: docs/operations.md.\n\
         [engine]\n\
         cores = {cores}\n\
         pin = true\n\
         busy_poll = false\n\
         \n\
         [[bdev]]\n\
         module = \"uring\"\n\
         name = \"pool0\"\n\
         path = {path}\n\
         \n\
         # The volume store on the pool (created on first start, when the pool is blank).\n\
         [[lvs]]\n\
         bdev = \"pool0\"\n\
         name = \"pool\"\n\
         create = true\n\
         \n\
         # iSCSI portal on loopback; targets are added with `basalt admin` or [[iscsi.target]].\n\
         [iscsi]\n\
         listen = [\"127.0.0.1:3260\"]\n\
         \n\
         # NVMe/TCP port on loopback; subsystems are added with `basalt admin` or [[nvmf.subsystem]].\n\
         [nvmf]\n\
         listen = [\"127.0.0.1:4420\"]\n\
         \n\
         # NBD on loopback only (NBD has no authentication without TLS, which Basalt does not\n\
         # offer); exports are added with `basalt admin` or [[nbd.export]].\n\
         [nbd]\n\
         listen = [\"127.0.0.1:10809\"]\n\
         \n\
         [admin]\n\
         socket = {socket}\n\
         \n\
         # The control plane's shared-memory rings (basalt up's control plane pairs here).\n\
         [ring]\n\
         socket = {ring}\n",
        path = toml::Value::String(pool.display().to_string()),
        socket = toml::Value::String(pool.with_file_name("datapath.sock").display().to_string()),
        ring = toml::Value::String(pool.with_file_name("ring.sock").display().to_string())
    )
}

fn up(args: &UpArgs) -> Result<()> {
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let pool = dir.join("pool.img");
    if !pool.exists() {
        if args.pool_size.0 < 1 << 20 || !args.pool_size.0.is_multiple_of(4096) {
            bail!("--pool-size must be at least 1M and a multiple of 4K");
        }
        let f = std::fs::File::create_new(&pool)
            .with_context(|| format!("cannot create {}", pool.display()))?;
        f.set_len(args.pool_size.0)
            .with_context(|| format!("cannot size {}", pool.display()))?;
        tracing::info!(path = %pool.display(), bytes = args.pool_size.0, "created the pool file");
    }
    let conf = dir.join("datapath.toml");
    if !conf.exists() {
        if pool.to_str().is_none() {
            bail!("the data directory's path is not UTF-8");
        }
        std::fs::write(&conf, default_datapath_toml(&pool))
            .with_context(|| format!("cannot write {}", conf.display()))?;
        tracing::info!(path = %conf.display(), "wrote the default datapath configuration");
    }
    let mut cfg = DatapathConfig::load(&conf)?;
    args.engine.apply(&mut cfg);
    // up's control plane talks to its datapath over the rings, also with a datapath.toml
    // written before they existed.
    if cfg.ring.is_none() {
        cfg.ring = Some(basalt_datapath::config::RingConfig {
            socket: dir.join("ring.sock"),
        });
    }
    let control_conf = dir.join("control.toml");
    if !control_conf.exists() {
        std::fs::write(&control_conf, default_control_toml(&dir))
            .with_context(|| format!("cannot write {}", control_conf.display()))?;
        tracing::info!(path = %control_conf.display(), "wrote the default control configuration");
    }
    let ccfg = ControlConfig::load(&control_conf)?;
    let mut signals = ShutdownSignals::install()?;
    let dp = Datapath::start(&cfg)?;
    let svc = match ControlService::start(&ccfg) {
        Ok(s) => s,
        Err(e) => {
            dp.shutdown();
            return Err(e.into());
        }
    };
    let openrc = dir.join("admin-openrc");
    let api = match start_api(&ccfg, &svc, Some(&openrc)) {
        Ok(a) => a,
        Err(e) => {
            svc.stop();
            dp.shutdown();
            return Err(e);
        }
    };
    let api_line = match &api {
        Some(a) => format!(
            "Cinder v3 API http://{} ({} auth)",
            a.local_addr(),
            ccfg.api.auth_strategy
        ),
        None => "no API ([api] enabled = false)".to_owned(),
    };
    let next = match api.as_ref().and_then(|a| a.openrc.as_ref()) {
        Some(rc) => format!(
            "source {} && openstack volume create --size 1 v1 && openstack volume list",
            rc.display()
        ),
        None => "see docs/operations.md".to_owned(),
    };
    let ports = up_ports(&cfg);
    eprintln!(
        "\nbasalt up: running from {data}\n\
         \x20 {api_line}\n\
         \x20 {ports}, metadata {data}/basalt.db\n\
         \x20 next: {next}\n\
         \x20 Ctrl-C stops everything.\n",
        data = dir.display(),
    );
    tracing::info!(data_dir = %dir.display(), "basalt up: Ctrl-C to stop");
    let sig = signals.wait();
    tracing::info!(signal = sig, "shutting down");
    if let Some(a) = api {
        a.stop();
    }
    svc.stop();
    dp.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn the_generated_control_config_parses() {
        let text = default_control_toml(Path::new("/var/lib/basalt \"data\""));
        let cfg = ControlConfig::parse(&text).expect("parses");
        assert_eq!(cfg.nodes.len(), 1);
        assert_eq!(cfg.nodes[0].lvs, "pool");
        assert_eq!(cfg.nodes[0].nbd_portal.as_deref(), Some("127.0.0.1:10809"));
    }

    #[test]
    fn the_generated_config_parses() {
        let text = default_datapath_toml(Path::new("/var/lib/basalt data/pool \"x\".img"));
        let cfg = DatapathConfig::parse(&text).expect("parses");
        assert_eq!(cfg.bdevs.len(), 1);
        assert!(cfg.engine_config().is_ok());
        let nbd = cfg.nbd.as_ref().expect("NBD is on");
        assert_eq!(nbd.listen, ["127.0.0.1:10809".parse().expect("addr")]);
        assert_eq!(
            up_ports(&cfg),
            "iSCSI 127.0.0.1:3260, NVMe/TCP 127.0.0.1:4420, NBD 127.0.0.1:10809"
        );
    }
}
