//! `usher-loadtest`: the waiting-room load generator (`visitors`), the idle-connection
//! memory probe (`connections`), the attack runs (`attack`, `attack-table`) and the fixed
//! upstream they run against (`upstream`).
//! Loopback only: targets and sources must be 127.0.0.0/8 addresses.

use clap::{Parser, Subcommand, ValueEnum};
use http::header::HeaderValue;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use usher_loadtest::adaptive;
use usher_loadtest::attack::{self, Kind};
use usher_loadtest::browser::Gateway;
use usher_loadtest::profile::Profile;
use usher_loadtest::report::Report;
use usher_loadtest::run::{self, Plan};
use usher_loadtest::sources::Sources;
use usher_loadtest::visitor::{Away, Script};
use usher_loadtest::{idle, plot, rlimit, scrape, upstream};

#[derive(Parser)]
#[command(name = "usher-loadtest", version, about = "Load tools for usher's waiting room (loopback only)")]
// A later flag overrides an earlier one, so a script's defaults can be overridden after it.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProfileKind {
    /// `--rate` arrivals per second.
    Steady,
    /// Every visitor within `--over` seconds.
    Spike,
    /// Every visitor within `--over` seconds, all before `--opens-at`.
    Opening,
}

#[derive(Subcommand)]
enum Command {
    /// Browser-like visitors through a waiting room; prints a summary, writes JSON and SVG.
    Visitors(Box<VisitorsArgs>),
    /// Memory per idle keep-alive connection of a running server (by its pid).
    Connections(ConnectionsArgs),
    /// One hostile pattern against a running usher, beside a measured real client.
    Attack(Box<AttackArgs>),
    /// The Markdown table of attack reports (JSON files; the first is the baseline).
    AttackTable { reports: Vec<PathBuf> },
    /// The three-run comparison of `loadtest/adaptive.sh`: a Markdown table and one SVG from
    /// runs given as NAME=DIR (each DIR holds `visitors.json` and `upstream.json`).
    AdaptiveReport {
        /// The mailbox's true capacity, in admissions per minute.
        #[arg(long)]
        capacity_per_minute: f64,
        /// From SECONDS into the run the capacity is N a minute (repeat, in order).
        #[arg(long = "capacity-per-minute-at", value_name = "SECONDS:N", value_parser = at_seconds)]
        capacity_at: Vec<(Duration, u64)>,
        #[arg(long)]
        svg: Option<PathBuf>,
        #[arg(long, default_value = "Adaptive outflow against fixed ones")]
        title: String,
        #[arg(required = true)]
        runs: Vec<String>,
    },
    /// Serves a fixed 1 KiB page on ADDR (the upstream of a load run); WebSocket upgrades
    /// are accepted and held. `GET /.upstream/stats` says what it served.
    Upstream {
        #[arg(long, value_parser = loopback)]
        listen: SocketAddr,
        /// Saturate like an application: quick up to N requests in flight, then slower the
        /// more it is overloaded (N workers share the requests: ×2 at 2N), and 503 past 4N.
        #[arg(long)]
        capacity: Option<u64>,
        /// Service time up to the capacity, in milliseconds (with --capacity).
        #[arg(long, default_value_t = 20)]
        base_ms: u64,
        /// From SECONDS after start the capacity is N (with --capacity; repeat, in order):
        /// a mailbox whose capacity moves.
        #[arg(long = "capacity-at", value_name = "SECONDS:N", value_parser = at_seconds)]
        capacity_at: Vec<(Duration, u64)>,
    },
}

#[derive(clap::Args)]
struct VisitorsArgs {
    /// usher's HTTP address; repeat it for several nodes (visitor i goes to node i mod n).
    #[arg(long = "target", value_parser = loopback, required = true)]
    targets: Vec<SocketAddr>,
    /// Reach usher through a load balancer of this many shared keep-alive connections from
    /// 127.0.0.1, each request naming its visitor in `X-Forwarded-For` (usher must trust
    /// 127.0.0.1 as a proxy), instead of a connection per visitor from its own address.
    #[arg(long)]
    gateway: Option<usize>,
    /// The room path visitors ask for first.
    #[arg(long, default_value = "/")]
    path: String,
    #[arg(long, default_value_t = 1000)]
    visitors: u64,
    #[arg(long, value_enum, default_value = "spike")]
    profile: ProfileKind,
    /// Seconds over which a spike or an opening crowd arrives.
    #[arg(long, default_value = "10", value_parser = seconds)]
    over: Duration,
    /// Arrivals per second (steady profile).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// The room's `opens_at`, Unix seconds (opening profile).
    #[arg(long)]
    opens_at: Option<u64>,
    /// Mailbox requests each admitted visitor makes with its pass.
    #[arg(long, default_value_t = 3)]
    mailbox_requests: usize,
    /// The mailbox path (default: `--path`).
    #[arg(long)]
    mailbox_path: Option<String>,
    /// Seconds before each mailbox request.
    #[arg(long, default_value = "0.5", value_parser = seconds)]
    think: Duration,
    /// Seconds to keep the connection open, idle, after the last request.
    #[arg(long, default_value = "0", value_parser = seconds)]
    linger: Duration,
    /// The run ends after this many seconds, whatever is left.
    #[arg(long, default_value = "300", value_parser = seconds)]
    time_limit: Duration,
    #[arg(long, default_value = "10", value_parser = seconds)]
    request_timeout: Duration,
    /// Multiplies usher's suggested poll interval (1 = as its page does).
    #[arg(long, default_value_t = 1.0)]
    poll_scale: f64,
    /// Close the connection before a pause longer than this (usher closes idle ones too).
    #[arg(long, default_value = "9", value_parser = seconds)]
    idle_close: Duration,
    /// The share of queued visitors who step away while they wait (a locked phone): they
    /// stop polling for `--away-for` seconds, `--away-after` seconds after joining, then
    /// poll at once on return, as usher's page does. 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    away_share: f64,
    /// Seconds after joining that a visitor who steps away goes.
    #[arg(long, default_value = "10", value_parser = seconds)]
    away_after: Duration,
    /// Seconds a visitor who steps away stays away (compare with the room's `hold`).
    #[arg(long, default_value = "60", value_parser = seconds)]
    away_for: Duration,
    /// The first visitor's source address; each next visitor takes the next one.
    #[arg(long, default_value = "127.1.0.1")]
    source_from: Ipv4Addr,
    /// Seed of the poll jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// usher's admin address: its metrics are sampled for the exact outflow.
    #[arg(long, value_parser = loopback)]
    admin: Option<SocketAddr>,
    /// The room whose metrics are read (default: all rooms summed).
    #[arg(long)]
    room: Option<String>,
    /// The configured outflow per minute, when usher's metrics are not read.
    #[arg(long)]
    outflow: Option<f64>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the plot as SVG here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args)]
struct ConnectionsArgs {
    #[arg(long, value_parser = loopback)]
    target: SocketAddr,
    /// The server process whose memory is read; repeat it for a server of several processes
    /// (nginx's master and workers), whose memory is summed.
    #[arg(long, required = true)]
    pid: Vec<u32>,
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// The one request on each connection (default: usher's status, answered by usher itself).
    #[arg(long, default_value = "/.usher/status")]
    path: String,
    #[arg(long, default_value = "127.2.0.1")]
    source_from: Ipv4Addr,
    #[arg(long, default_value = "2", value_parser = seconds)]
    settle: Duration,
    /// Open TLS connections, verifying the server against the CA certificates in this PEM
    /// file (the name checked is the target's IP address).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct AttackArgs {
    /// The attack (`none`: the real client alone, the baseline).
    #[arg(value_enum)]
    kind: Kind,
    /// usher's HTTP address.
    #[arg(long, value_parser = loopback)]
    target: SocketAddr,
    /// usher's process id: its RSS and open descriptors are sampled from /proc.
    #[arg(long)]
    pid: u32,
    /// usher's admin address: its `usher_limiter_*` metrics are read after the attack.
    #[arg(long, value_parser = loopback)]
    admin: Option<SocketAddr>,
    /// How long the attack lasts.
    #[arg(long, default_value = "20", value_parser = seconds)]
    seconds: Duration,
    /// The path the attack asks for (default: /event for ticket-flood, /ws for
    /// websocket-flood, / otherwise).
    #[arg(long)]
    path: Option<String>,
    /// Sockets, connections or tunnels (default: slowloris 10000, h2-idle 5000,
    /// websocket-flood 2000, other h2 kinds 8, floods 32 proxy connections).
    #[arg(long)]
    sockets: Option<u64>,
    /// Seconds between a slowloris socket's bytes.
    #[arg(long, default_value = "5", value_parser = seconds)]
    trickle: Duration,
    /// Distinct IPv6 /64s of the key flood.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Requests per second of the one flooding client the key flood watches.
    #[arg(long, default_value_t = 200.0)]
    flooder_rate: f64,
    /// Bytes of each oversized HPACK header block (h2-hpack).
    #[arg(long, default_value_t = 256 * 1024)]
    header_bytes: usize,
    /// The real client's page (a room on which it is admitted at once).
    #[arg(long, default_value = "/inbox")]
    client_path: String,
    /// The real client's new visitors per second.
    #[arg(long, default_value_t = 20.0)]
    client_rate: f64,
    /// Requests per real visitor.
    #[arg(long, default_value_t = 3)]
    client_requests: usize,
    /// Seconds before the real client gives a request up (an error).
    #[arg(long, default_value = "5", value_parser = seconds)]
    client_timeout: Duration,
    /// How long to wait for usher to recover after the attack.
    #[arg(long, default_value = "30", value_parser = seconds)]
    recover_limit: Duration,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker threads of the attack (the real client has a thread of its own).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let v: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("`{text}` is not a duration of zero seconds or more"))
}

fn loopback(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|_| format!("`{text}` is not an address like 127.0.0.1:8080"))?;
    if addr.ip().is_loopback() { Ok(addr) } else { Err(format!("{addr} is not a loopback address (loopback only)")) }
}

/// `SECONDS:N`, as `--capacity-at 60:16`.
fn at_seconds(text: &str) -> Result<(Duration, u64), String> {
    let parsed = text.split_once(':').and_then(|(t, n)| Some((t.parse::<u64>().ok()?, n.parse::<u64>().ok()?)));
    let (seconds, n) = parsed.ok_or_else(|| format!("`{text}` is not SECONDS:N, like 60:16"))?;
    if n == 0 {
        return Err(format!("`{text}`: N must be above 0"));
    }
    Ok((Duration::from_secs(seconds), n))
}

fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    builder.enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Visitors(args) => visitors(*args),
        Command::Connections(args) => connections(args),
        Command::Attack(args) => run_attack(*args),
        Command::AttackTable { reports } => attack_table(&reports),
        Command::AdaptiveReport { capacity_per_minute, capacity_at, svg, title, runs } => {
            let changes = capacity_at.iter().map(|(t, n)| (t.as_secs_f64(), *n as f64)).collect();
            let capacity = adaptive::Capacity { first: capacity_per_minute, changes };
            adaptive_report(&capacity, svg.as_ref(), &title, &runs)
        }
        Command::Upstream { listen, capacity, base_ms, capacity_at } => {
            let knee = capacity.map(|capacity| upstream::Knee { capacity, base: Duration::from_millis(base_ms) });
            serve_upstream(listen, knee, capacity_at)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("usher-loadtest: {message}");
            ExitCode::from(2)
        }
    }
}

fn write(path: &PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn visitors(args: VisitorsArgs) -> Result<(), String> {
    let profile = match args.profile {
        ProfileKind::Steady => Profile::Steady { per_second: args.rate },
        ProfileKind::Spike => Profile::Spike { over: args.over },
        ProfileKind::Opening => Profile::Opening {
            over: args.over,
            opens_at: args
                .opens_at
                .ok_or("the opening profile needs --opens-at (the room's opens_at, Unix seconds)")?,
        },
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    profile.check(now).map_err(|e| e.to_string())?;
    if !(args.poll_scale.is_finite() && args.poll_scale > 0.0) {
        return Err(format!("--poll-scale must be a positive number, not {}", args.poll_scale));
    }
    if !(0.0..=1.0).contains(&args.away_share) {
        return Err(format!("--away-share must be between 0 and 1, not {}", args.away_share));
    }
    if !args.path.starts_with('/') {
        return Err(format!("--path must start with '/', not `{}`", args.path));
    }
    let sources = Sources::new(args.source_from, args.visitors).map_err(|e| e.to_string())?;
    let host = HeaderValue::from_str(&args.targets[0].to_string()).map_err(|e| e.to_string())?;
    let mailbox = args.mailbox_path.clone().unwrap_or_else(|| args.path.clone());
    let gateway = match args.gateway {
        Some(0) => return Err("--gateway must be at least 1 connection".into()),
        Some(slots) => Some(Arc::new(Gateway::new(args.targets.clone(), slots))),
        None => None,
    };
    let plan = Plan {
        script: Script {
            targets: args.targets,
            gateway,
            host,
            join_path: args.path,
            mailbox_paths: vec![mailbox; args.mailbox_requests],
            think: args.think,
            linger: args.linger,
            request_timeout: args.request_timeout,
            poll_scale: args.poll_scale,
            idle_close: args.idle_close,
            away: (args.away_share > 0.0).then_some(Away {
                share: args.away_share,
                after: args.away_after,
                stay: args.away_for,
            }),
        },
        visitors: args.visitors,
        profile,
        time_limit: args.time_limit,
        sources,
        seed: args.seed,
        scrape: args.admin.map(|admin| scrape::Target { admin, room: args.room.clone() }),
    };
    let limit = rlimit::raise_open_files(args.visitors + 1024)
        .map_err(|e| format!("cannot raise the open-files limit: {e}"))?;
    if limit < args.visitors.min(20_000) {
        eprintln!("usher-loadtest: warning: only {limit} open files allowed; visitors close idle connections to fit");
    }
    let outcome = runtime(args.threads).map_err(|e| e.to_string())?.block_on(run::run(plan));
    let report = Report::build(&outcome, profile, args.visitors, args.outflow);
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        write(path, &json)?;
    }
    if let Some(path) = &args.svg {
        write(path, &plot::svg(&report))?;
    }
    Ok(())
}

fn connections(args: ConnectionsArgs) -> Result<(), String> {
    let sources = Sources::new(args.source_from, args.count).map_err(|e| e.to_string())?;
    rlimit::raise_open_files(args.count + 1024).map_err(|e| format!("cannot raise the open-files limit: {e}"))?;
    let plan = idle::Plan {
        target: args.target,
        count: args.count,
        path: args.path,
        sources,
        pids: args.pid,
        settle: args.settle,
        parallel: 256,
        tls: args.tls_ca.as_deref().map(idle::tls_connector).transpose().map_err(|e| e.to_string())?,
    };
    let report = runtime(None).map_err(|e| e.to_string())?.block_on(idle::measure(plan)).map_err(|e| e.to_string())?;
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        write(path, &serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?)?;
    }
    Ok(())
}

fn run_attack(args: AttackArgs) -> Result<(), String> {
    let kind = args.kind;
    let sockets = args.sockets.unwrap_or(match kind {
        Kind::Slowloris => 10_000,
        Kind::H2Idle => 5_000,
        Kind::WebsocketFlood => 2_000,
        Kind::KeyFlood | Kind::TicketFlood => 32,
        _ => 8,
    });
    let path = args.path.unwrap_or_else(|| kind.default_path().to_string());
    for p in [&path, &args.client_path] {
        if !p.starts_with('/') {
            return Err(format!("paths must start with '/', not `{p}`"));
        }
    }
    if !(args.client_rate.is_finite() && args.client_rate > 0.0) {
        return Err(format!("--client-rate must be a positive number, not {}", args.client_rate));
    }
    // Every real visitor has an address of its own for the whole run, plus some to spare.
    let source_count = ((args.client_rate * (args.seconds.as_secs_f64() + 10.0)) as u64).clamp(16, 60_000);
    let client = attack::client::Plan {
        target: args.target,
        path: args.client_path,
        rate: args.client_rate,
        requests: args.client_requests.max(1),
        think: Duration::from_millis(200),
        timeout: args.client_timeout,
        sources: attack::sources(attack::source::CLIENT, source_count)?,
        source_count,
    };
    // Each socket is a descriptor (a websocket or h2 connection too), and the client's.
    let limit = rlimit::raise_open_files(sockets + source_count + 4096)
        .map_err(|e| format!("cannot raise the open-files limit: {e}"))?;
    if limit < sockets + 1024 {
        eprintln!("usher-loadtest: warning: only {limit} open files allowed for {sockets} sockets");
    }
    let plan = attack::Plan {
        kind,
        target: args.target,
        pid: args.pid,
        admin: args.admin,
        seconds: args.seconds,
        path,
        sockets,
        trickle: args.trickle,
        keys: args.keys,
        flooder_rate: args.flooder_rate,
        header_bytes: args.header_bytes,
        client,
        recover_limit: args.recover_limit,
    };
    // On one machine the attack tool shares CPUs with the real client it is measured beside;
    // on the peak day the attacker is on machines of its own. So the attack's threads run at
    // the lowest priority (nice 19), and the client's thread, started from the main thread,
    // puts itself ahead of them (`attack::client`, SCHED_FIFO where allowed).
    let attack_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .on_thread_start(lowest_priority)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = attack_runtime.block_on(attack::run(plan));
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        write(path, &serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?)?;
    }
    Ok(())
}

/// Lowers the calling thread to nice 19 (Linux keeps a nice value per thread). Best effort:
/// a thread left at the normal priority only makes the measurement harsher.
fn lowest_priority() {
    // SAFETY: setpriority reads no memory of ours; `who` 0 is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

fn adaptive_report(
    capacity: &adaptive::Capacity,
    svg: Option<&PathBuf>,
    title: &str,
    runs: &[String],
) -> Result<(), String> {
    let first = capacity.first;
    if !(first.is_finite() && first > 0.0) {
        return Err(format!("--capacity-per-minute must be a positive number, not {first}"));
    }
    let runs = runs
        .iter()
        .map(|arg| {
            let (name, dir) = arg.split_once('=').ok_or_else(|| format!("a run is NAME=DIR, not `{arg}`"))?;
            adaptive::Run::read(name, std::path::Path::new(dir))
        })
        .collect::<Result<Vec<_>, _>>()?;
    print!("{}", adaptive::table(&runs, capacity));
    if let Some(path) = svg {
        write(path, &adaptive::svg(&runs, capacity, title))?;
    }
    Ok(())
}

fn attack_table(paths: &[PathBuf]) -> Result<(), String> {
    let mut reports = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        reports.push(
            serde_json::from_str::<attack::Report>(&text)
                .map_err(|e| format!("{} is not an attack report: {e}", path.display()))?,
        );
    }
    print!("{}", attack::table::markdown(&reports));
    Ok(())
}

fn serve_upstream(
    listen: SocketAddr,
    knee: Option<upstream::Knee>,
    changes: Vec<(Duration, u64)>,
) -> Result<(), String> {
    runtime(None).map_err(|e| e.to_string())?.block_on(async move {
        // A deep backlog: under a spike usher opens upstream connections in bursts.
        let bind = || -> std::io::Result<tokio::net::TcpListener> {
            let socket =
                if listen.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            socket.bind(listen)?;
            socket.listen(4096)
        };
        let listener = bind().map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        println!("upstream listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
        upstream::serve_moving(listener, knee, changes).await;
        Ok(())
    })
}
