//! api-bench: the Cinder v3 API of a running Basalt, measured as a client sees it.
//!
//! Over plain HTTP against `basalt up` (or `basalt control`):
//!
//! - **create-until-available**: `POST /v3/{p}/volumes`, then `GET /v3/{p}/volumes/{id}` every
//!   `--poll-ms` (first poll one interval after the 202) until the volume is `available`; the
//!   latency of each volume from the POST to the poll that saw `available`, at each
//!   `--concurrency` level (volumes in flight), and volumes/s.
//! - **show** (`GET /volumes/{id}`): one request's cost, as a baseline.
//! - **list**: `GET /volumes/detail?limit=1000` and `GET /volumes?limit=1000`, with the bytes
//!   of each response.
//! - **attach**: `os-initialize_connection` and `os-terminate_connection` over `--attach`
//!   volumes, one connector (initiator IQN) each; then the 3.27+ attachments flow (`POST
//!   /attachments` with a connector, `os-complete`, `DELETE /attachments/{id}`).
//! - **delete-until-gone**: `DELETE /volumes/{id}`, then polls until the GET is 404.
//!
//! Volumes are made at the first concurrency level and the show, list and attach figures are
//! taken over them; each further level creates and deletes its own `--volumes`. Everything the
//! run made is deleted at the end, and the project's volume quotas are lifted for the run and
//! put back afterwards. With `--server-pid`, the server's CPU time (`/proc/PID/stat`) per
//! operation is reported too.
//!
//! Goals (printed next to the figures, never enforced): create-until-available p99 < 50 ms,
//! list of 1,000 volumes p99 < 50 ms.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use basalt_bench::cpu::CpuTime;
use clap::Parser;
use hdrhistogram::Histogram;
use reqwest::Method;
use serde_json::{Value, json};

/// Measures a Basalt Cinder v3 API: create-until-available, show, list, attach and delete
/// latencies (p50/p90/p99/max) and rates, printed as a table and one JSON line.
///
/// Examples:
///
///   api-bench --url http://127.0.0.1:8776 --token admin:admin
///
///   api-bench --url http://127.0.0.1:8776 --openrc basalt-data/admin-openrc --volumes 200
///
/// Exit status: 0 done; 1 setup failed (API unreachable, no token, first create failed);
/// 2 bad command line; 3 the run finished but some requests failed (see the err column).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The API's base URL (plain http).
    #[arg(long, default_value = "http://127.0.0.1:8776", value_name = "URL")]
    url: String,

    /// A noauth token, `user:project` (the project is the part after the colon). Without
    /// --token or --openrc: `admin:admin`.
    #[arg(long, value_name = "USER:PROJECT", conflicts_with = "openrc")]
    token: Option<String>,

    /// An openrc file (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, ...): a
    /// project-scoped token is issued by password from that identity service.
    #[arg(long, value_name = "FILE")]
    openrc: Option<PathBuf>,

    /// Volumes to create at each concurrency level.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    volumes: usize,

    /// Concurrency levels for create-until-available and delete-until-gone (volumes in
    /// flight), comma-separated; the first level's volumes serve the show, list and attach
    /// measurements.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,8",
        value_name = "C[,C...]"
    )]
    concurrency: Vec<usize>,

    /// Size of each volume in GB.
    #[arg(long, default_value_t = 1, value_name = "GB")]
    size: u64,

    /// Volumes to attach (initialize_connection, then the attachments flow).
    #[arg(long, default_value_t = 200, value_name = "N")]
    attach: usize,

    /// Repetitions of each list request.
    #[arg(long, default_value_t = 50, value_name = "N")]
    list_reps: usize,

    /// Show requests (round robin over the volumes).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    show_reps: usize,

    /// Poll interval while waiting for `available` or for a deleted volume to go, in ms.
    #[arg(long, default_value_t = 2, value_name = "MS")]
    poll_ms: u64,

    /// The OpenStack-API-Version sent with every request (3.27 or later for attachments).
    #[arg(long, default_value = "3.54", value_name = "3.X")]
    microversion: String,

    /// The server's process id, for its CPU time per operation (from /proc/PID/stat).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// Seconds to wait for the API to answer and the availability zone to be up.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    wait: u64,

    /// A label for the JSON line (e.g. the auth mode).
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
}

/// How long one volume may take to become available or to go.
const VOLUME_TIMEOUT: Duration = Duration::from_secs(300);
/// The goal for create-until-available p99 and list p99 (issue), in µs.
const GOAL_US: u64 = 50_000;

type Res<T> = Result<T, String>;

/// A client of one project.
#[derive(Debug)]
struct Api {
    http: reqwest::Client,
    base: String,
    project: String,
    token: String,
    version: String,
}

/// One HTTP answer, timed from the send to the last byte of the body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    elapsed: Duration,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn want(self, status: u16, what: &str) -> Res<Reply> {
        if self.status == status {
            Ok(self)
        } else {
            let mut text = String::from_utf8_lossy(&self.body).into_owned();
            text.truncate(300);
            Err(format!(
                "{what}: HTTP {} (wanted {status}): {text}",
                self.status
            ))
        }
    }
}

impl Api {
    /// `path` is relative to `/v3/{project}/`, or absolute when it starts with `/`.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Res<Reply> {
        let url = if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/v3/{}/{path}", self.base, self.project)
        };
        let mut rb = self
            .http
            .request(method, url)
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", format!("volume {}", self.version))
            .header("Accept", "application/json");
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let t = Instant::now();
        let resp = rb.send().await.map_err(|e| chain(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| chain(&e))?;
        let elapsed = t.elapsed();
        Ok(Reply {
            status,
            body: bytes.to_vec(),
            elapsed,
        })
    }
}

/// One timed operation.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    latency: Duration,
    /// The part until the first answer (the 202 of a create or delete).
    first: Duration,
    /// Requests it took.
    requests: u32,
}

/// Wall time and CPU at a point, to take the difference over a phase.
#[derive(Debug, Clone, Copy)]
struct Snap {
    at: Instant,
    client: CpuTime,
    server: Option<Duration>,
}

impl Snap {
    fn take(pid: Option<u32>) -> Snap {
        Snap {
            at: Instant::now(),
            client: CpuTime::process(),
            server: pid.and_then(proc_cpu),
        }
    }
}

/// What one phase measured.
#[derive(Debug)]
struct Measure {
    name: String,
    hist: Histogram<u64>,
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
    client_cpu: Duration,
    server_cpu: Option<Duration>,
    /// Bytes of each response (lists).
    bytes: Option<u64>,
    /// Extra figures, printed after the row and put in the JSON.
    notes: BTreeMap<String, Value>,
    /// `(text, met)`.
    goal: Option<(String, bool)>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Microseconds, at least 1 (a latency is never zero; the histogram starts at 1).
fn micros(d: Duration) -> u64 {
    cpu_micros(d).max(1)
}

/// Microseconds (CPU time: /proc's clock ticks may well show none).
fn cpu_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Measure {
    fn new(name: impl Into<String>) -> Measure {
        Measure {
            name: name.into(),
            hist: histogram(),
            errors: 0,
            first_error: None,
            wall: Duration::ZERO,
            client_cpu: Duration::ZERO,
            server_cpu: None,
            bytes: None,
            notes: BTreeMap::new(),
            goal: None,
        }
    }

    fn record(&mut self, d: Duration) {
        self.hist.saturating_record(micros(d));
    }

    fn fail(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    fn add(&mut self, r: Res<Duration>) {
        match r {
            Ok(d) => self.record(d),
            Err(e) => self.fail(e),
        }
    }

    fn close(&mut self, since: Snap, pid: Option<u32>) {
        let now = Snap::take(pid);
        self.wall = now.at - since.at;
        self.client_cpu = now.client.since(since.client).total();
        self.server_cpu = match (since.server, now.server) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
    }

    fn ops(&self) -> u64 {
        self.hist.len()
    }

    fn rate(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 { lossy(self.ops()) / s } else { 0.0 }
    }

    fn p(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    fn set_goal(&mut self, what: &str) {
        if self.hist.is_empty() {
            self.goal = Some((format!("{what}: no data"), false));
            return;
        }
        let p99 = self.p(0.99);
        let met = p99 < GOAL_US;
        self.goal = Some((
            format!(
                "{what} p99 < {} ms: {}",
                GOAL_US / 1000,
                if met { "met" } else { "NOT met" }
            ),
            met,
        ));
    }

    fn per_op(&self, d: Duration) -> Option<Duration> {
        let n = u32::try_from(self.ops()).ok().filter(|&n| n > 0)?;
        Some(d / n)
    }

    fn row(&self) -> String {
        let srv = self
            .server_cpu
            .and_then(|c| self.per_op(c))
            .map_or_else(|| "-".to_owned(), |d| fmt_us(cpu_micros(d)));
        let cli = self
            .per_op(self.client_cpu)
            .map_or_else(|| "-".to_owned(), |d| fmt_us(cpu_micros(d)));
        let rate = if self.wall.is_zero() {
            "-".to_owned()
        } else {
            format!("{:.1}/s", self.rate())
        };
        let mut line = format!(
            "{:<34} {:>5} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            self.name,
            self.ops(),
            self.errors,
            fmt_us(self.p(0.5)),
            fmt_us(self.p(0.9)),
            fmt_us(self.p(0.99)),
            fmt_us(self.hist.max()),
            rate,
            srv,
            cli,
        );
        if let Some((g, _)) = &self.goal {
            line.push_str("  ");
            line.push_str(g);
        }
        let mut extra: Vec<String> = Vec::new();
        if let Some(b) = self.bytes {
            extra.push(format!("{b} bytes/response"));
        }
        for (k, v) in &self.notes {
            extra.push(format!("{k}={v}"));
        }
        if let Some(e) = &self.first_error {
            extra.push(format!("first error: {e}"));
        }
        if !extra.is_empty() {
            line.push_str("\n    ");
            line.push_str(&extra.join("; "));
        }
        line
    }

    fn to_json(&self) -> Value {
        let mut o = json!({
            "n": self.ops(),
            "errors": self.errors,
            "p50_us": self.p(0.5),
            "p90_us": self.p(0.9),
            "p99_us": self.p(0.99),
            "max_us": self.hist.max(),
            "mean_us": self.hist.mean().round(),
            "per_s": (!self.wall.is_zero()).then(|| (self.rate() * 10.0).round() / 10.0),
            "wall_s": (self.wall.as_secs_f64() * 1000.0).round() / 1000.0,
            "client_cpu_us_per_op": self.per_op(self.client_cpu).map(cpu_micros),
            "server_cpu_us_per_op": self.server_cpu.and_then(|c| self.per_op(c)).map(cpu_micros),
        });
        if let Some(b) = self.bytes {
            o["bytes_per_response"] = json!(b);
        }
        for (k, v) in &self.notes {
            o[k] = v.clone();
        }
        if let Some((g, met)) = &self.goal {
            o["goal"] = json!(g);
            o["goal_met"] = json!(met);
        }
        if let Some(e) = &self.first_error {
            o["first_error"] = json!(e);
        }
        o
    }
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^53
fn lossy(n: u64) -> f64 {
    n as f64
}

fn fmt_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", lossy(us) / 1000.0)
    } else {
        format!("{:.2}s", lossy(us) / 1e6)
    }
}

/// utime + stime of a whole process, from `/proc/PID/stat`.
fn proc_cpu(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything; the fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime 15.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    Some(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
}

/// Runs `f(0..n)` with `c` in flight; the results in index order.
async fn pool<F, Fut>(c: usize, n: usize, f: F) -> Vec<Res<Sample>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Res<Sample>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..c.clamp(1, n.max(1)) {
        let (f, next) = (f.clone(), next.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                out.push((i, f(i).await));
            }
            out
        });
    }
    let mut all: Vec<(usize, Res<Sample>)> = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(v) => all.extend(v),
            Err(e) => all.push((usize::MAX, Err(format!("worker failed: {e}")))),
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// POST a volume and poll until it is available; `made` gets its id as soon as it has one.
async fn create_until_available(
    api: &Api,
    name: String,
    size: u64,
    poll: Duration,
    made: &Mutex<Vec<String>>,
) -> Res<Sample> {
    let t = Instant::now();
    let r = api
        .call(
            Method::POST,
            "volumes",
            Some(&json!({"volume": {"size": size, "name": name}})),
        )
        .await?
        .want(202, "POST volumes")?;
    let first = t.elapsed();
    let v = r.json();
    let id = v["volume"]["id"]
        .as_str()
        .ok_or_else(|| format!("POST volumes: no id in {v}"))?
        .to_owned();
    made.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(id.clone());
    let mut requests = 1;
    let path = format!("volumes/{id}");
    loop {
        tokio::time::sleep(poll).await;
        let r = api
            .call(Method::GET, &path, None)
            .await?
            .want(200, "GET volume")?;
        requests += 1;
        let v = r.json();
        let status = v["volume"]["status"].as_str().unwrap_or("?");
        match status {
            "available" => {
                return Ok(Sample {
                    latency: t.elapsed(),
                    first,
                    requests,
                });
            }
            "creating" => {}
            s if s.starts_with("error") => return Err(format!("volume {id} went to {s}")),
            s => return Err(format!("volume {id} is {s} while being created")),
        }
        if t.elapsed() > VOLUME_TIMEOUT {
            return Err(format!(
                "volume {id} not available after {VOLUME_TIMEOUT:?}"
            ));
        }
    }
}

/// DELETE a volume and poll until the GET is 404.
async fn delete_until_gone(api: &Api, id: &str, poll: Duration) -> Res<Sample> {
    let t = Instant::now();
    let path = format!("volumes/{id}");
    api.call(Method::DELETE, &path, None)
        .await?
        .want(202, "DELETE volume")?;
    let first = t.elapsed();
    let mut requests = 1;
    loop {
        tokio::time::sleep(poll).await;
        let r = api.call(Method::GET, &path, None).await?;
        requests += 1;
        if r.status == 404 {
            return Ok(Sample {
                latency: t.elapsed(),
                first,
                requests,
            });
        }
        let r = r.want(200, "GET deleted volume")?;
        let status = r.json()["volume"]["status"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        if status.starts_with("error") {
            return Err(format!("volume {id} went to {status} while being deleted"));
        }
        if t.elapsed() > VOLUME_TIMEOUT {
            return Err(format!(
                "volume {id} still {status} after {VOLUME_TIMEOUT:?}"
            ));
        }
    }
}

/// The create row, the POST-only row, and the ids (of every volume that got one, available or
/// not).
async fn create_phase(
    api: &Arc<Api>,
    args: &Args,
    c: usize,
    tag: &str,
) -> (Measure, Measure, Vec<String>) {
    let made = Arc::new(Mutex::new(Vec::new()));
    let poll = Duration::from_millis(args.poll_ms);
    let size = args.size;
    let snap = Snap::take(args.server_pid);
    let results = {
        let (api, made, tag) = (api.clone(), made.clone(), tag.to_owned());
        pool(c, args.volumes, move |i| {
            let (api, made, name) = (api.clone(), made.clone(), format!("{tag}-{i}"));
            async move { create_until_available(&api, name, size, poll, &made).await }
        })
        .await
    };
    let mut m = Measure::new(format!("create-until-available c={c}"));
    m.close(snap, args.server_pid);
    let mut post = Measure::new(format!("  create POST->202 c={c}"));
    let mut requests = 0u64;
    for r in results {
        match r {
            Ok(s) => {
                m.record(s.latency);
                post.record(s.first);
                requests += u64::from(s.requests);
            }
            Err(e) => m.fail(e),
        }
    }
    if m.ops() > 0 {
        m.notes.insert(
            "requests_per_volume".into(),
            json!((lossy(requests) / lossy(m.ops()) * 10.0).round() / 10.0),
        );
    }
    m.set_goal("create");
    let ids = std::mem::take(&mut *made.lock().unwrap_or_else(PoisonError::into_inner));
    (m, post, ids)
}

async fn delete_phase(api: &Arc<Api>, args: &Args, c: usize, ids: Vec<String>) -> Measure {
    let poll = Duration::from_millis(args.poll_ms);
    let snap = Snap::take(args.server_pid);
    let n = ids.len();
    let ids = Arc::new(ids);
    let results = {
        let api = api.clone();
        pool(c, n, move |i| {
            let (api, ids) = (api.clone(), ids.clone());
            async move { delete_until_gone(&api, &ids[i], poll).await }
        })
        .await
    };
    let mut m = Measure::new(format!("delete-until-gone c={c}"));
    m.close(snap, args.server_pid);
    for r in results {
        m.add(r.map(|s| s.latency));
    }
    m
}

/// `reps` requests of `path`, one at a time.
async fn repeat(api: &Api, args: &Args, name: &str, reps: usize, path: &str) -> Measure {
    let mut m = Measure::new(name);
    let snap = Snap::take(args.server_pid);
    let mut first = None;
    for _ in 0..reps {
        match api.call(Method::GET, path, None).await {
            Ok(r) if r.status == 200 => {
                m.record(r.elapsed);
                m.bytes = Some(r.body.len() as u64);
                if first.is_none() {
                    first = Some(r);
                }
            }
            Ok(r) => m.fail(r.want(200, path).err().unwrap_or_default()),
            Err(e) => m.fail(e),
        }
    }
    m.close(snap, args.server_pid);
    if let Some(r) = first
        && let Some(l) = r.json()["volumes"].as_array()
    {
        m.notes.insert("volumes_listed".into(), json!(l.len()));
    }
    m
}

async fn show_phase(api: &Api, args: &Args, ids: &[String]) -> Measure {
    let mut m = Measure::new("show (GET volume)");
    let snap = Snap::take(args.server_pid);
    for i in 0..args.show_reps {
        let path = format!("volumes/{}", ids[i % ids.len()]);
        let r = api.call(Method::GET, &path, None).await;
        m.add(r.and_then(|r| r.want(200, "GET volume")).map(|r| r.elapsed));
    }
    m.close(snap, args.server_pid);
    m
}

fn connector(i: usize) -> Value {
    json!({
        "initiator": format!("iqn.1994-05.com.redhat:bench-{i}"),
        "ip": "127.0.0.1",
        "host": format!("bench-{i}"),
        "platform": "x86_64",
        "os_type": "linux",
        "multipath": false,
        "do_local_attach": false,
    })
}

/// initialize_connection over `ids`, then terminate_connection.
async fn legacy_attach(api: &Api, args: &Args, ids: &[String]) -> (Measure, Measure) {
    let mut init = Measure::new("os-initialize_connection");
    let snap = Snap::take(args.server_pid);
    for (i, id) in ids.iter().enumerate() {
        let body = json!({"os-initialize_connection": {"connector": connector(i)}});
        let r = api
            .call(Method::POST, &format!("volumes/{id}/action"), Some(&body))
            .await;
        init.add(
            r.and_then(|r| r.want(200, "os-initialize_connection"))
                .and_then(|r| {
                    let v = r.json();
                    if v["connection_info"]["driver_volume_type"].is_string() {
                        Ok(r.elapsed)
                    } else {
                        Err(format!(
                            "os-initialize_connection: no connection_info in {v}"
                        ))
                    }
                }),
        );
    }
    init.close(snap, args.server_pid);
    let mut term = Measure::new("os-terminate_connection");
    let snap = Snap::take(args.server_pid);
    for (i, id) in ids.iter().enumerate() {
        let body = json!({"os-terminate_connection": {"connector": connector(i)}});
        let r = api
            .call(Method::POST, &format!("volumes/{id}/action"), Some(&body))
            .await;
        term.add(
            r.and_then(|r| r.want(202, "os-terminate_connection"))
                .map(|r| r.elapsed),
        );
    }
    term.close(snap, args.server_pid);
    (init, term)
}

/// The attachments flow over `ids`: create (with connector) all, complete all, delete all.
async fn attachments(api: &Api, args: &Args, ids: &[String]) -> [Measure; 3] {
    let mut create = Measure::new("POST attachments (connector)");
    let mut aids = Vec::new();
    let snap = Snap::take(args.server_pid);
    for (i, id) in ids.iter().enumerate() {
        let body = json!({"attachment": {
            "volume_uuid": id,
            "instance_uuid": format!("00000000-0000-4000-8000-{i:012x}"),
            "connector": connector(i),
            "mode": "rw",
        }});
        let r = api.call(Method::POST, "attachments", Some(&body)).await;
        match r.and_then(|r| r.want(200, "POST attachments")) {
            Ok(r) => {
                let v = r.json();
                match v["attachment"]["id"].as_str() {
                    Some(aid) if v["attachment"]["connection_info"].is_object() => {
                        create.record(r.elapsed);
                        aids.push(aid.to_owned());
                    }
                    Some(aid) => {
                        aids.push(aid.to_owned());
                        create.fail(format!("POST attachments: no connection_info in {v}"));
                    }
                    None => create.fail(format!("POST attachments: no id in {v}")),
                }
            }
            Err(e) => create.fail(e),
        }
    }
    create.close(snap, args.server_pid);
    let mut complete = Measure::new("attachment os-complete");
    let snap = Snap::take(args.server_pid);
    for aid in &aids {
        let r = api
            .call(
                Method::POST,
                &format!("attachments/{aid}/action"),
                Some(&json!({"os-complete": {}})),
            )
            .await;
        complete.add(
            r.and_then(|r| r.want(204, "os-complete"))
                .map(|r| r.elapsed),
        );
    }
    complete.close(snap, args.server_pid);
    let mut delete = Measure::new("DELETE attachment");
    let snap = Snap::take(args.server_pid);
    for aid in &aids {
        let r = api
            .call(Method::DELETE, &format!("attachments/{aid}"), None)
            .await;
        delete.add(
            r.and_then(|r| r.want(200, "DELETE attachment"))
                .map(|r| r.elapsed),
        );
    }
    delete.close(snap, args.server_pid);
    [create, complete, delete]
}

/// Statuses of the project's volumes (for after the attach phases).
async fn statuses(api: &Api) -> Res<BTreeMap<String, usize>> {
    let r = api
        .call(Method::GET, "volumes/detail?limit=1000", None)
        .await?
        .want(200, "GET volumes/detail")?;
    let mut out = BTreeMap::new();
    for v in r.json()["volumes"].as_array().into_iter().flatten() {
        *out.entry(v["status"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    Ok(out)
}

/// The variables an openrc exports (`export K='V'`, shell single quotes).
fn read_openrc(path: &Path) -> Res<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(kv) = line.strip_prefix("export ") else {
            continue;
        };
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        vars.insert(k.trim().to_owned(), unquote(v.trim()));
    }
    Ok(vars)
}

/// Undoes shell quoting of the simple kind: '...' runs, "..." runs, backslash escapes.
fn unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => out.extend(chars.next()),
                        c => out.push(c),
                    }
                }
            }
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// A password token from the openrc's identity: (token, project id, time the issue took).
async fn password_token(http: &reqwest::Client, rc: &Path) -> Res<(String, String, Duration)> {
    let vars = read_openrc(rc)?;
    let get = |k: &str| {
        vars.get(k)
            .cloned()
            .ok_or_else(|| format!("{}: no {k}", rc.display()))
    };
    let url = format!("{}/auth/tokens", get("OS_AUTH_URL")?.trim_end_matches('/'));
    let udom = vars
        .get("OS_USER_DOMAIN_ID")
        .cloned()
        .unwrap_or_else(|| "default".into());
    let pdom = vars
        .get("OS_PROJECT_DOMAIN_ID")
        .cloned()
        .unwrap_or_else(|| "default".into());
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": get("OS_USERNAME")?, "domain": {"id": udom},
            "password": get("OS_PASSWORD")?}}},
        "scope": {"project": {"name": get("OS_PROJECT_NAME")?, "domain": {"id": pdom}}}}});
    let t = Instant::now();
    let resp = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {}", chain(&e)))?;
    let status = resp.status().as_u16();
    let token = resp
        .headers()
        .get("x-subject-token")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.bytes().await.map_err(|e| chain(&e))?;
    let took = t.elapsed();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    match (status, token, v["token"]["project"]["id"].as_str()) {
        (201, Some(t), Some(p)) => Ok((t, p.to_owned(), took)),
        _ => Err(format!(
            "POST {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        )),
    }
}

/// Waits until the API answers and the first availability zone is up.
async fn wait_ready(api: &Api, within: Duration) -> Res<()> {
    let deadline = Instant::now() + within;
    let mut last;
    loop {
        match api.call(Method::GET, "os-availability-zone", None).await {
            Ok(r) if r.status == 200 => {
                let v = r.json();
                if v["availabilityZoneInfo"][0]["zoneState"]["available"] == json!(true) {
                    return Ok(());
                }
                last = format!("zone not available yet: {v}");
            }
            Ok(r) => last = format!("HTTP {}", r.status),
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            return Err(format!("the API was not ready within {within:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Lifts the project's volume and gigabyte quotas; returns what to put back.
async fn lift_quotas(api: &Api) -> Res<Value> {
    let path = format!("os-quota-sets/{}", api.project);
    let r = api
        .call(Method::GET, &path, None)
        .await?
        .want(200, "GET quotas")?;
    let q = r.json();
    let old = json!({"quota_set": {
        "volumes": q["quota_set"]["volumes"],
        "gigabytes": q["quota_set"]["gigabytes"],
    }});
    let lifted = json!({"quota_set": {"volumes": -1, "gigabytes": -1}});
    api.call(Method::PUT, &path, Some(&lifted))
        .await?
        .want(200, "PUT quotas")?;
    Ok(old)
}

/// An error and its sources, outermost first.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn run(args: Args) -> Res<bool> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| chain(&e))?;
    let base = args.url.trim_end_matches('/').to_owned();
    let (token, project, auth, token_issue) = match &args.openrc {
        Some(rc) => {
            let deadline = Instant::now() + Duration::from_secs(args.wait);
            loop {
                match password_token(&http, rc).await {
                    Ok((t, p, took)) => {
                        break (t, p, "password token (builtin identity)", Some(took));
                    }
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        None => {
            let t = args.token.clone().unwrap_or_else(|| "admin:admin".into());
            let p = t
                .split_once(':')
                .map(|(_, p)| p.to_owned())
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("--token {t:?} is not user:project"))?;
            (t, p, "noauth token", None)
        }
    };
    let api = Arc::new(Api {
        http,
        base,
        project,
        token,
        version: args.microversion.clone(),
    });
    wait_ready(&api, Duration::from_secs(args.wait)).await?;
    let old_quotas = match lift_quotas(&api).await {
        Ok(q) => Some(q),
        Err(e) => {
            eprintln!("api-bench: warning: cannot lift the quotas ({e}); creates may hit them");
            None
        }
    };
    let levels: Vec<usize> = if args.concurrency.is_empty() {
        vec![1]
    } else {
        args.concurrency.iter().map(|&c| c.max(1)).collect()
    };
    let tag = format!("api-bench-{}", std::process::id());
    let mut rows: Vec<Measure> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let started = Instant::now();
    let server_start = args.server_pid.and_then(proc_cpu);
    let mut created = 0u64;
    let mut setup_error = None;
    for (li, &c) in levels.iter().enumerate() {
        eprintln!(
            "api-bench: creating {} volumes at concurrency {c}",
            args.volumes
        );
        let (m, post, ids) = create_phase(&api, &args, c, &format!("{tag}-c{c}")).await;
        created += m.ops();
        let ok = m.ops() > 0;
        rows.push(m);
        rows.push(post);
        if li == 0 && ok {
            eprintln!(
                "api-bench: show, list and attach over {} volumes",
                ids.len()
            );
            rows.push(show_phase(&api, &args, &ids).await);
            rows.push(
                repeat(
                    &api,
                    &args,
                    "list detail (limit=1000)",
                    args.list_reps,
                    "volumes/detail?limit=1000",
                )
                .await,
            );
            rows.push(
                repeat(
                    &api,
                    &args,
                    "list summary (limit=1000)",
                    args.list_reps,
                    "volumes?limit=1000",
                )
                .await,
            );
            let listed = rows
                .iter()
                .rev()
                .take(2)
                .filter_map(|m| m.notes.get("volumes_listed").and_then(Value::as_u64))
                .min()
                .unwrap_or(0);
            let what = if listed >= 1000 {
                "list of 1,000".to_owned()
            } else {
                format!("list (only {listed} volumes)")
            };
            let n = rows.len();
            rows[n - 2].set_goal(&what);
            rows[n - 1].set_goal(&what);
            let k = args.attach.min(ids.len());
            if k > 0 {
                let (init, term) = legacy_attach(&api, &args, &ids[..k]).await;
                rows.push(init);
                rows.push(term);
                rows.extend(attachments(&api, &args, &ids[..k]).await);
            }
            match statuses(&api).await {
                Ok(s) => {
                    let busy: usize = s
                        .iter()
                        .filter(|(k, _)| k.as_str() != "available")
                        .map(|(_, n)| n)
                        .sum();
                    if busy > 0 {
                        notes.push(format!(
                            "after the attach phases, volumes not available: {s:?}"
                        ));
                    }
                }
                Err(e) => notes.push(format!("cannot list after the attach phases: {e}")),
            }
        } else if li == 0 {
            setup_error = Some("no volume became available".to_owned());
        }
        eprintln!(
            "api-bench: deleting {} volumes at concurrency {c}",
            ids.len()
        );
        rows.push(delete_phase(&api, &args, c, ids).await);
        if setup_error.is_some() {
            break;
        }
    }
    if let Some(q) = old_quotas {
        let path = format!("os-quota-sets/{}", api.project);
        if let Err(e) = api
            .call(Method::PUT, &path, Some(&q))
            .await
            .and_then(|r| r.want(200, "PUT quotas"))
        {
            notes.push(format!("could not put the quotas back: {e}"));
        }
    }
    let server_total = match (server_start, args.server_pid.and_then(proc_cpu)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };

    // The report.
    println!(
        "api-bench: {} volumes of {} GB per level, concurrency {:?}, {}, project {}, {auth}, \
         microversion {}, poll {} ms",
        args.volumes, args.size, levels, api.base, api.project, args.microversion, args.poll_ms
    );
    if let Some(t) = token_issue {
        println!(
            "token issue (POST /identity/v3/auth/tokens, password): {}",
            fmt_us(micros(t))
        );
    }
    println!(
        "{:<34} {:>5} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "measurement", "n", "err", "p50", "p90", "p99", "max", "rate", "srv-cpu", "cli-cpu"
    );
    for m in &rows {
        println!("{}", m.row());
    }
    println!(
        "(srv-cpu, cli-cpu: CPU time per operation of the server process (/proc/PID/stat, \
         10 ms ticks over the whole phase) and of api-bench; a POST->202 row is the first \
         part of the row above it)"
    );
    if let Some(t) = server_total
        && created > 0
    {
        println!(
            "server CPU over the whole run: {:.2} s, {} per created volume (create, show, list, attach, delete all included)",
            t.as_secs_f64(),
            fmt_us(micros(t / u32::try_from(created).unwrap_or(u32::MAX)))
        );
    }
    for n in &notes {
        println!("note: {n}");
    }
    let errors: usize = rows.iter().map(|m| m.errors).sum();
    let goals: Vec<Value> = rows
        .iter()
        .filter_map(|m| {
            m.goal
                .as_ref()
                .map(|(g, met)| json!({"measurement": m.name.trim(), "goal": g, "met": met}))
        })
        .collect();
    let line = json!({
        "bench": "api",
        "label": args.label,
        "url": api.base,
        "auth": auth,
        "volumes": args.volumes,
        "size_gb": args.size,
        "concurrency": levels,
        "microversion": args.microversion,
        "poll_ms": args.poll_ms,
        "token_issue_us": token_issue.map(cpu_micros),
        "wall_s": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "server_cpu_s": server_total.map(|t| t.as_secs_f64()),
        "volumes_created": created,
        "errors": errors,
        "measurements": rows.iter().map(|m| (m.name.trim().to_owned(), m.to_json())).collect::<serde_json::Map<_, _>>(),
        "goals": goals,
        "notes": notes,
    });
    println!("{line}");
    if let Some(e) = setup_error {
        return Err(e);
    }
    Ok(errors == 0)
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("api-bench: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(3),
        Err(e) => {
            eprintln!("api-bench: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn openrc_values_are_unquoted() {
        assert_eq!(unquote("'a b'"), "a b");
        assert_eq!(unquote(r"'it'\''s'"), "it's");
        assert_eq!(unquote("\"x\\\"y\""), "x\"y");
        assert_eq!(unquote("plain"), "plain");
    }

    #[test]
    fn durations_print_in_their_unit() {
        assert_eq!(fmt_us(812), "812µs");
        assert_eq!(fmt_us(7_120), "7.12ms");
        assert_eq!(fmt_us(2_500_000), "2.50s");
    }

    #[test]
    fn this_process_has_cpu_time() {
        let pid = std::process::id();
        assert!(proc_cpu(pid).is_some());
    }
}
