//! A Sentinel-managed Redis for the tests: a master, a replica of it and three sentinels,
//! each a real process on 127.0.0.1. Every sentinel has its own config file in its own temp
//! directory, since a sentinel rewrites its file as it learns. The sentinels notice a dead
//! master after one second (`down-after-milliseconds 1000`) and fail over within seconds.
//! With TLS every process speaks only TLS, all with one CA.
//! Ports are picked as [`RedisServer`] picks them (see its module comment), and a sentinel
//! whose port was taken meanwhile is started again on another.

use super::TempDir;
use super::redis_server::{PortTaken, RedisOptions, RedisServer, await_ready, unused_port};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name the sentinels know the master by.
pub const MASTER_NAME: &str = "usher";

/// A master, its replica and three sentinels; every process is killed on drop.
pub struct RedisSentinels {
    /// The two data servers: the first starts as the master.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
    options: RedisOptions,
}

struct SentinelProcess {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl RedisSentinels {
    /// Starts the master, its replica (waiting until it is in sync) and three sentinels
    /// (waiting until each knows the replica and the other two).
    pub fn start(password: Option<&str>) -> Self {
        Self::start_with(RedisOptions { password: password.map(str::to_string), ..RedisOptions::default() })
    }

    /// The same with `options` (`password`, `tls`) for the data servers; with TLS the
    /// sentinels speak only TLS too, and every process has the master's CA and certificate.
    pub fn start_with(options: RedisOptions) -> Self {
        let master = RedisServer::start_with(options.clone());
        let options = RedisOptions { certificates_from: options.tls.then(|| master.dir().to_path_buf()), ..options };
        let replica = RedisServer::start_with(RedisOptions { replica_of: Some(master.port), ..options.clone() });
        wait_until("the replica is in sync with its master", || {
            replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
        });
        let tls = options.tls.then(|| master.dir().to_path_buf());
        let sentinels =
            (0..3).map(|_| SentinelProcess::start(master.port, options.password.as_deref(), tls.as_deref())).collect();
        let set = Self { servers: vec![master, replica], sentinels, options };
        wait_until("every sentinel knows the replica and the two other sentinels", || {
            (0..set.sentinels.len()).all(|i| {
                let replicas = entries(&set.sentinel_cli(i, &["SENTINEL", "REPLICAS", MASTER_NAME]));
                let others = entries(&set.sentinel_cli(i, &["SENTINEL", "SENTINELS", MASTER_NAME]));
                replicas.len() == 1
                    && replicas[0].get("master-link-status").is_some_and(|s| s == "ok")
                    && others.len() == 2
            })
        });
        set
    }

    /// `redis+sentinel://` (`rediss+sentinel://` with TLS) naming the three sentinels and the
    /// master (no password: give it in `USHER_REDIS_PASSWORD`).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        let scheme = if self.options.tls { "rediss+sentinel" } else { "redis+sentinel" };
        format!("{scheme}://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The master's port as the first sentinel that answers names it.
    pub fn master_port(&self) -> Option<u16> {
        (0..self.sentinels.len()).find_map(|i| {
            let answer = self.sentinel_cli(i, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
            answer.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// The data server that is the master now.
    pub fn master(&self) -> &RedisServer {
        let port = self.master_port().expect("the sentinels name a master");
        self.servers.iter().find(|s| s.port == port).expect("the master is one of the servers")
    }

    /// Kills the master (SIGKILL, as a crash would); returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("the sentinels name a master");
        let server = self.servers.iter_mut().find(|s| s.port == port).expect("the master is one of the servers");
        server.stop();
        port
    }

    /// Runs `redis-cli` against sentinel `i`.
    pub fn sentinel_cli(&self, i: usize, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.sentinels[i].port.to_string()]);
        if self.options.tls {
            command.arg("--tls").arg("--cacert").arg(self.servers[0].ca_file());
        }
        let out = command.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The password of the data servers, if any.
    pub fn password(&self) -> Option<&str> {
        self.options.password.as_deref()
    }

    /// The CA file that signed every certificate (TLS only).
    pub fn ca_file(&self) -> PathBuf {
        self.servers[0].ca_file()
    }
}

impl SentinelProcess {
    /// `tls`: the directory of the CA and certificate to serve TLS only with.
    fn start(master_port: u16, password: Option<&str>, tls: Option<&Path>) -> Self {
        const ATTEMPTS: usize = 5;
        let mut sentinel = Self { child: None, port: 0, dir: TempDir::new("sentinel") };
        for attempt in 1..=ATTEMPTS {
            sentinel.port = unused_port();
            match sentinel.launch(master_port, password, tls) {
                Ok(()) => return sentinel,
                Err(PortTaken(log)) if attempt == ATTEMPTS => {
                    panic!("redis-sentinel found its port taken {ATTEMPTS} times; the last time:\n{log}")
                }
                Err(PortTaken(_)) => {}
            }
        }
        unreachable!("every attempt returns or panics")
    }

    fn launch(&mut self, master_port: u16, password: Option<&str>, tls: Option<&Path>) -> Result<(), PortTaken> {
        let dir = self.dir.path();
        let log = dir.join("sentinel.log");
        let _ = std::fs::remove_file(&log);
        let ports = match tls {
            None => format!("port {}\n", self.port),
            Some(certs) => format!(
                "port 0\ntls-port {}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\ntls-replication yes\n",
                self.port,
                certs.join("server.pem").display(),
                certs.join("server.key").display(),
                certs.join("ca.pem").display(),
            ),
        };
        let mut config = format!(
            "{ports}bind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\nlogfile {log}\n\
             sentinel resolve-hostnames no\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 3000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.display(),
            log = log.display(),
        );
        if let Some(password) = password {
            config.push_str(&format!("sentinel auth-pass {MASTER_NAME} {password}\n"));
        }
        let file = dir.join("sentinel.conf");
        std::fs::write(&file, config).expect("write sentinel.conf");
        let child = Command::new("redis-sentinel")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-sentinel (tests/run.sh installs it)");
        self.child = Some(child);
        await_ready(&mut self.child, &log, &format!("+monitor master {MASTER_NAME}"), "redis-sentinel")
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The entries of a `SENTINEL REPLICAS`/`SENTINELS` answer as redis-cli prints them (one
/// line per field name and value), each as a map; an entry starts at its `name` field.
fn entries(answer: &str) -> Vec<HashMap<String, String>> {
    let lines: Vec<&str> = answer.lines().map(str::trim).collect();
    let mut all: Vec<HashMap<String, String>> = Vec::new();
    for pair in lines.chunks(2) {
        let [name, value] = pair else { break };
        if *name == "name" {
            all.push(HashMap::new());
        }
        if let Some(entry) = all.last_mut() {
            entry.insert(name.to_string(), value.to_string());
        }
    }
    all
}

/// Polls `check` every 50 ms until it holds; panics with `what` after 20 s.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out after 20 s waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
