//! The `usher` command line: run, check-config, demo, admin, verify-draw.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use usher::config::Config;
use usher::{Running, Server};

#[derive(Parser)]
#[command(name = "usher", version, about = "A fair, privacy-first login queue and rate-limiting reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (for the default `run` command).
    #[arg(long, short, env = "USHER_CONFIG", default_value = "/etc/usher/usher.toml", global = true)]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run usher with the configuration file (the default).
    Run,
    /// Validate a configuration file: exit 0 with a summary, or 2 with every error.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Start a demo mailbox on loopback with usher in front of it.
    Demo {
        /// Where usher listens for the browser.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin listener (metrics, health) listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
    /// A client of the admin API (your token from USHER_ADMIN_TOKEN), and operators' tokens.
    Admin {
        /// The admin listener.
        #[arg(long, default_value = "127.0.0.1:9090")]
        addr: SocketAddr,
        /// The admin listener speaks TLS (admin.tls_cert); implied by --ca-file and --server-name.
        #[arg(long)]
        tls: bool,
        /// PEM bundle to verify the admin listener's certificate (default: the system's roots).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// The name to verify in its certificate (default: the address).
        #[arg(long)]
        server_name: Option<String>,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Check a room's draw as published at /.usher/draw/ROOM: the seed against its commitment,
    /// and every place the admitter walked past against the order the seed draws. Exit 0 if
    /// it holds, 1 if not, 2 if the file cannot be read.
    VerifyDraw {
        /// The publication saved as JSON (`-` for standard input), e.g.
        /// `curl -s https://mailbox.example/.usher/draw/ROOM > draw.json`.
        file: PathBuf,
        /// Also tell where this ticket number was drawn.
        #[arg(long)]
        ticket: Option<u64>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List rooms with their live figures.
    Rooms,
    /// One room.
    Room { name: String },
    /// Change a room's limits live.
    Set {
        name: String,
        #[arg(long)]
        max_active: Option<u64>,
        #[arg(long)]
        admit_per_minute: Option<u64>,
        /// auto, queue_all, paused or closed.
        #[arg(long)]
        mode: Option<String>,
        /// RFC 3339 event start, or "none" to clear it.
        #[arg(long)]
        opens_at: Option<String>,
        /// Shown to waiters; "none" clears it.
        #[arg(long)]
        message: Option<String>,
    },
    /// Stop admitting (the line keeps its order).
    Pause {
        name: String,
        #[arg(long)]
        message: Option<String>,
    },
    /// Admit again.
    Resume { name: String },
    /// End sessions: all, or the oldest N.
    Drain {
        name: String,
        #[arg(long)]
        oldest: Option<u64>,
    },
    /// Break-glass (admin role): let everyone in for a while; the room returns by itself.
    Off {
        name: String,
        /// How long, e.g. 15m (1m to 24h).
        #[arg(long = "for", value_parser = parse_for)]
        duration: std::time::Duration,
    },
    /// Follow the event stream: figures each tick, changes, outages, lease hand-overs.
    Watch {
        /// Resume after this event id (what the last line printed).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Operators' tokens (made here; nothing is sent to usher).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh token for NAME and the [[admin.operator]] lines to paste.
    New {
        /// The operator's name, as it will appear in every log line of their changes.
        name: String,
        /// viewer (figures), operator (pause, resume, drain, limits) or admin (everything).
        #[arg(long, default_value = "operator")]
        role: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("USHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::CheckConfig { file } => check_config(&file),
        Command::Demo { listen, admin } => demo(listen, admin),
        Command::VerifyDraw { file, ticket } => verify_draw(&file, ticket),
        Command::Admin { addr, tls, ca_file, server_name, command } => {
            let target = if tls || ca_file.is_some() || server_name.is_some() {
                match usher::admin_client::Admin::tls(addr, ca_file, server_name.as_deref()) {
                    Ok(target) => target,
                    Err(e) => {
                        eprintln!("usher admin: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                usher::admin_client::Admin { addr, tls: None }
            };
            admin(&target, command)
        }
    }
}

fn admin(target: &usher::admin_client::Admin, command: AdminCommand) -> ExitCode {
    use usher::admin_client::Call;
    let clearable = |v: String| if v == "none" { serde_json::Value::Null } else { serde_json::Value::String(v) };
    let call = match command {
        AdminCommand::Rooms => Call::rooms(),
        AdminCommand::Room { name } => Call::room(&name),
        AdminCommand::Set { name, max_active, admit_per_minute, mode, opens_at, message } => {
            let mut fields = serde_json::Map::new();
            if let Some(n) = max_active {
                fields.insert("max_active".into(), n.into());
            }
            if let Some(n) = admit_per_minute {
                fields.insert("admit_per_minute".into(), n.into());
            }
            if let Some(mode) = mode {
                fields.insert("mode".into(), mode.into());
            }
            if let Some(t) = opens_at {
                fields.insert("opens_at".into(), clearable(t));
            }
            if let Some(m) = message {
                fields.insert("message".into(), clearable(m));
            }
            Call::set(&name, fields)
        }
        AdminCommand::Pause { name, message } => Call::pause(&name, message),
        AdminCommand::Resume { name } => Call::resume(&name),
        AdminCommand::Drain { name, oldest } => Call::drain(&name, oldest),
        AdminCommand::Watch { after } => Call::watch(after),
        AdminCommand::Off { name, duration } => Call::off(&name, duration.as_secs()),
        AdminCommand::Token { command: TokenCommand::New { name, role } } => return new_token(&name, &role),
    };
    let token = std::env::var("USHER_ADMIN_TOKEN").ok();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| runtime.block_on(call.send(target, token.as_deref())));
    match result {
        Ok((status, body)) => {
            println!("{body}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("usher admin: {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("usher admin: cannot reach the admin API at {}: {e}", target.addr);
            ExitCode::FAILURE
        }
    }
}

fn verify_draw(file: &std::path::Path, ticket: Option<u64>) -> ExitCode {
    use usher::store::draw::{self, Publication};
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(file)
    };
    let publication: Publication = match text
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("not a draw's publication: {e}")))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("usher verify-draw: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match draw::verify(&publication) {
        Ok(verified) => {
            println!(
                "room {}: the draw holds. The seed matches its commitment, and the {} places walked past so far \
                 ({} admitted) follow the order it draws for the {} pre-queued tickets.",
                publication.room,
                verified.walked,
                verified.admitted,
                verified.order.len()
            );
            if let Some(ticket) = ticket {
                match verified.position(ticket) {
                    Some(k) => println!("ticket {ticket} was drawn at place {} of {}.", k + 1, verified.order.len()),
                    None => println!("ticket {ticket} was not in this pre-queue."),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("room {}: the draw does NOT hold: {e}", publication.room);
            ExitCode::from(1)
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            println!("{}: valid\n{}", file.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(file: &std::path::Path) -> ExitCode {
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(key = %e.key, "invalid configuration: {}", e.reason);
            }
            return ExitCode::from(2);
        }
    };
    let config_for_reload = config.clone();
    let Some(signals) = Signals::install() else { return ExitCode::FAILURE };
    match Server::start(config) {
        Ok(running) => signals.wait(running, Some((file, config_for_reload))),
        Err(e) => {
            tracing::error!("cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The process's signal handlers, installed before usher starts listening: a signal that
/// arrives in between would otherwise take its default action, and `SIGHUP`'s is to kill the
/// process (a reload sent right after start-up must not end it, nor drop its connections).
struct Signals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    /// `SIGUSR1`: reopen the audit file (after logrotate), nothing else.
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the signal runtime");
                return None;
            }
        };
        let installed = {
            let _context = runtime.enter();
            (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
                signal(SignalKind::user_defined1()),
            )
        };
        match installed {
            (Ok(term), Ok(int), Ok(hup), Ok(usr1)) => Some(Self { runtime, term, int, hup, usr1 }),
            (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for signals");
                None
            }
        }
    }

    /// Blocks until SIGTERM or SIGINT, then shuts down gracefully and exits 0. With a
    /// configuration file, `SIGHUP` reloads it meanwhile; `SIGHUP` and `SIGUSR1` reopen the
    /// audit file.
    fn wait(self, running: Running, reloadable: Option<(&std::path::Path, Config)>) -> ExitCode {
        let Self { runtime, mut term, mut int, mut hup, mut usr1 } = self;
        runtime.block_on(async {
            let mut current = reloadable;
            loop {
                tokio::select! {
                    _ = term.recv() => return tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => return tracing::info!("SIGINT: shutting down"),
                    _ = usr1.recv() => running.changes.audit.reopen(),
                    _ = hup.recv() => {
                        running.changes.audit.reopen();
                        let Some((path, old)) = current.as_mut() else {
                            tracing::info!("SIGHUP ignored: no configuration file");
                            continue;
                        };
                        match Config::load(path) {
                            Err(errors) => {
                                for e in &errors.0 {
                                    tracing::error!(key = %e.key, "reload rejected, running configuration kept: {}", e.reason);
                                }
                            }
                            Ok(new) => {
                                let done = usher::reload::apply(&running, old, &new).await;
                                tracing::info!(
                                    rooms_changed = ?done.rooms_changed,
                                    gate_changed = done.gate_changed,
                                    needs_restart = ?done.needs_restart,
                                    "configuration reloaded"
                                );
                                *old = usher::reload::in_force(old, &new);
                            }
                        }
                    }
                }
            }
        });
        running.shutdown();
        running.wait();
        tracing::info!("stopped");
        ExitCode::SUCCESS
    }
}

/// `--for 15m`: a duration as in the configuration file, from a minute to a day.
fn parse_for(text: &str) -> Result<std::time::Duration, String> {
    let duration = usher::config::duration::parse(text)?;
    if (60..=86_400).contains(&duration.as_secs()) { Ok(duration) } else { Err("must be from 1m to 24h".into()) }
}

/// `usher admin token new NAME`: the token is printed once and never stored; the lines to
/// paste hold only its SHA-256.
fn new_token(name: &str, role: &str) -> ExitCode {
    use usher::operators::{Role, new_operator_text, new_token, valid_name};
    if !valid_name(name) || name == usher::operators::SHORTCUT_NAME {
        eprintln!(
            "usher admin token new: NAME must be 1 to 64 letters, digits, '.', '_', '-' or '@' (not admin-token)"
        );
        return ExitCode::from(2);
    }
    let Some(role) = Role::parse(role) else {
        eprintln!("usher admin token new: --role must be viewer, operator or admin");
        return ExitCode::from(2);
    };
    match new_token() {
        Ok(token) => {
            print!("{}", new_operator_text(name, role, &token));
            ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!("usher admin token new: the system's random source failed");
            ExitCode::FAILURE
        }
    }
}

fn demo(listen: SocketAddr, admin: SocketAddr) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot build a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mailbox = match runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot start the demo mailbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(mailbox_addr) = mailbox.local_addr() else {
        return ExitCode::FAILURE;
    };
    let mut config = match usher::demo::config(mailbox_addr, listen, admin) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("the demo configuration is invalid: {errors}");
            return ExitCode::FAILURE;
        }
    };
    // A token for the console, made for this demo unless USHER_ADMIN_TOKEN gives one.
    let demo_token = match std::env::var("USHER_ADMIN_TOKEN") {
        Ok(_) => None,
        Err(_) => usher::operators::new_token().ok(),
    };
    config.admin.token.clone_from(&demo_token);
    let Some(signals) = Signals::install() else { return ExitCode::FAILURE };
    // One node: a random secret is right here, so no warning about it.
    let started = usher::secrets::Secrets::new(Vec::new())
        .map_err(usher::StartError::from)
        .and_then(|secrets| Server::start_with_secrets(config, secrets));
    let running = match started {
        Ok(running) => running,
        Err(e) => {
            eprintln!("cannot start usher: {e}");
            return ExitCode::FAILURE;
        }
    };
    let usher_addr = running.http_addr.unwrap_or(listen);
    // The mailbox and a small simulated crowd run on their own thread; they end with the process.
    std::thread::spawn(move || {
        runtime.block_on(async move {
            tokio::spawn(usher::demo::serve_mailbox(mailbox));
            usher::demo::crowd(usher_addr, 10).await;
        })
    });
    println!();
    println!("  usher demo is running: a demo mailbox with room for 3 visitors at a time,");
    println!("  admitting one every 5 seconds, and a simulated crowd of 10 keeping it busy.");
    println!();
    println!("  Open  http://{usher_addr}/login  in your browser: you will see your place in the queue");
    println!("  and be let in automatically.");
    match &demo_token {
        Some(token) => {
            println!("  Operators' console: http://{}/admin/  (token for this run: {token})", running.admin_addr)
        }
        None => println!("  Operators' console: http://{}/admin/  (your USHER_ADMIN_TOKEN)", running.admin_addr),
    }
    println!("  Metrics: http://{}/metrics    Stop: Ctrl+C", running.admin_addr);
    println!();
    signals.wait(running, None)
}

/// jemalloc rather than glibc's malloc: glibc keeps the memory of a burst of closed
/// connections for ever (306 MB held after 10,000 closed), jemalloc hands it back (issue 16).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at start (`_RJEM_MALLOC_CONF` still overrides them). Without its
/// background thread, freed pages are purged only when something allocates again, so an idle
/// usher after a burst would keep them; a 1 s decay returns them soon after the burst. A
/// reference to the first byte: jemalloc reads a C string pointer here.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];
