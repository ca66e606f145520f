//! The basalt-bench command.

use std::time::Duration;

use basalt_bdev::ByteSize;
use basalt_bench::{Job, Pattern, TargetSpec, run};
use clap::Parser;

/// Load generator for Basalt targets, in the manner of SPDK's bdevperf: runs on Basalt's own
/// thread-per-core engine and reports IOPS, bandwidth, latency percentiles and CPU per I/O.
///
/// Examples:
///
///   basalt-bench --target file:/var/tmp/disk.img --rw randread --bs 4k --qd 32 --time 10s
///
///   basalt-bench --target malloc:1G --rw randrw --rwmixread 70 --cores 2 --verify --json
///
///   basalt-bench -t nvmf:127.0.0.1:4420/nqn.2026-11.org.basalt:vol,queues=2 --qd 128 --time 10s
///
///   basalt-bench -t iscsi://127.0.0.1:3260/iqn.2026-11.org.basalt:vol/0 --rw randwrite --time 10s
///
/// Exit status: 0 success; 1 the job could not run (bad target or job); 2 bad command line;
/// 3 the job ran but I/O failed or verify found a mismatch.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// What to drive: `file:PATH` (a regular file or block device, O_DIRECT), `malloc:SIZE`
    /// (RAM), `null:SIZE` (discards writes, reads zeros), `lvol:PATH[,OPTION...]` (a volume of
    /// a volume store on PATH), or a remote device:
    ///
    /// `nvmf:HOST[:PORT]/SUBNQN[,nsid=N][,queues=N][,digest|hdgst|ddgst][,hostnqn=NQN][,nocopy]`:
    /// NVMe/TCP (port 4420 by default). One controller per run; each core opens `queues` I/O
    /// queues (default 1) and spreads its I/O over them. `nsid` defaults to the first active
    /// namespace. `nocopy` does not copy read data into the I/O buffers (to measure that copy;
    /// not with --verify).
    ///
    /// `iscsi://[USER%SECRET@]HOST[:PORT]/TARGET-IQN/LUN`: iSCSI (port 3260 by default), one
    /// session per core, libiscsi's URL form. CHAP (MD5) credentials come from the URL or from
    /// BASALT_ISCSI_CHAP_USER and BASALT_ISCSI_CHAP_SECRET; BASALT_ISCSI_INITIATOR sets the
    /// initiator name (default iqn.2026-11.org.basalt:bench).
    #[arg(long, short, value_name = "TARGET")]
    target: TargetSpec,

    /// Access pattern.
    #[arg(long, value_enum, default_value = "randread")]
    rw: Pattern,

    /// Percentage of reads for `--rw randrw`.
    #[arg(long, default_value_t = 50, value_name = "PCT")]
    rwmixread: u8,

    /// Bytes per I/O (suffixes K, M, G; powers of 1024).
    #[arg(long, default_value = "4K", value_name = "SIZE")]
    bs: ByteSize,

    /// I/Os kept in flight per core.
    #[arg(long, default_value_t = 32, value_name = "N")]
    qd: usize,

    /// Number of cores (reactors on CPUs 0..N).
    #[arg(long, default_value_t = 1, value_name = "N", conflicts_with = "cpus")]
    cores: usize,

    /// Comma-separated CPUs, one reactor each (instead of --cores).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    cpus: Option<Vec<usize>>,

    /// Run for this long: `10s`, `500ms`, `2m`, or plain seconds.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    time: Option<Duration>,

    /// Stop after transferring this many bytes in all (with --time: whichever comes first).
    /// Without --time or --size, the job makes one pass over its region.
    #[arg(long, value_name = "SIZE")]
    size: Option<ByteSize>,

    /// First byte of the region to use.
    #[arg(long, default_value = "0", value_name = "SIZE")]
    offset: ByteSize,

    /// Bytes of the region (default: to the end of the target); split evenly between cores.
    #[arg(long, value_name = "SIZE")]
    span: Option<ByteSize>,

    /// Logical block size of the target: 512 or 4096 (default: the device's; 512 for files
    /// and RAM).
    #[arg(long, value_name = "BYTES")]
    block_size: Option<u32>,

    /// Use the page cache for file targets (default: O_DIRECT).
    #[arg(long)]
    buffered: bool,

    /// Write a self-describing pattern (offset, run, generation and CRC-32C in every 4 KiB, or
    /// every 512 B when --bs is not a multiple of 4 KiB), check every read of data this run
    /// wrote, and read everything written back at the end. Exits with status 3 on any mismatch.
    #[arg(long)]
    verify: bool,

    /// Keep going after I/O errors (default: a core stops at its first error; the others finish
    /// their jobs). Either way the run exits with status 3 if any I/O failed.
    #[arg(long)]
    continue_on_error: bool,

    /// Do not pin reactors to their CPUs.
    #[arg(long)]
    no_pin: bool,

    /// Reactors spin instead of sleeping when idle.
    #[arg(long)]
    busy_poll: bool,

    /// Completions a reactor handles before submitting the I/O they trigger (engine tuning).
    #[arg(long, default_value_t = 4, value_name = "N")]
    completion_batch: usize,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let spec = args
        .target
        .clone()
        .with_block_size(args.block_size)
        .with_buffered(args.buffered);
    let target = match spec.open() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("basalt-bench: cannot open {spec}: {}", chain(&e));
            std::process::exit(1);
        }
    };
    let job = Job {
        rw: args.rw,
        rwmixread: args.rwmixread,
        bs: args.bs.0,
        qd: args.qd,
        cpus: args.cpus.unwrap_or_else(|| (0..args.cores).collect()),
        pin: !args.no_pin,
        busy_poll: args.busy_poll,
        completion_batch: args.completion_batch,
        time: args.time,
        size: args.size.map(|s| s.0),
        offset: args.offset.0,
        span: args.span.map(|s| s.0),
        verify: args.verify,
        continue_on_error: args.continue_on_error,
    };
    let report = match run(&job, &target) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("basalt-bench: {}", chain(&e));
            std::process::exit(1);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report always serialises")
        );
    } else {
        print!("{}", report.table());
    }
    if !report.ok() {
        std::process::exit(3);
    }
}

/// An error and its sources, outermost first: "cannot open /x: No such file or directory".
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
