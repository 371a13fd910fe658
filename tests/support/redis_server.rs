//! A real `redis-server` for the tests: its own temp directory and a loopback port,
//! optionally with a password, TLS (a CA and a server certificate made here with rcgen) and
//! an append-only file, so a restart keeps the data as a production Redis would.
//!
//! The one server here that cannot report the port it got. Every other server the tests
//! start listens on port 0 and says which port the kernel gave it; `redis-server` takes
//! `--port 0` to mean "no TCP at all" and has no way to pick a port itself. So the port is
//! picked here (an ephemeral one the kernel hands out as free) and given to redis-server;
//! another process may take it between the pick and redis's bind, and then redis-server
//! exits with "Address already in use" and [`RedisServer::start_with`] tries another port.

use super::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the server is started.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    pub password: Option<String>,
    pub tls: bool,
    /// Keep the data across a restart (appendonly, fsync every write).
    pub persist: bool,
    /// Start as a replica of the server on this loopback port.
    pub replica_of: Option<u16>,
    /// A cluster node (`--cluster-enabled`), to be joined by `redis-cli --cluster create`.
    pub cluster: bool,
    /// With `tls`: the CA and certificate of this directory instead of new ones, so that
    /// servers that talk to each other (a cluster's bus) trust each other.
    pub certificates_from: Option<PathBuf>,
}

/// A running redis-server; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub options: RedisOptions,
    dir: TempDir,
}

impl RedisServer {
    /// A plain server without password or persistence.
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server, on another port if the one picked was taken meanwhile (see the
    /// module's comment).
    pub fn start_with(options: RedisOptions) -> Self {
        const ATTEMPTS: usize = 5;
        let dir = TempDir::new("redis");
        match (&options.certificates_from, options.tls) {
            (Some(from), true) => {
                for file in ["ca.pem", "server.pem", "server.key"] {
                    std::fs::copy(from.join(file), dir.path().join(file)).expect("copy a certificate file");
                }
            }
            (None, true) => write_certificates(&dir),
            (_, false) => {}
        }
        let mut server = Self { child: None, port: 0, options, dir };
        for attempt in 1..=ATTEMPTS {
            server.port = unused_port();
            match server.launch() {
                Ok(()) => return server,
                Err(PortTaken(log)) if attempt == ATTEMPTS => {
                    panic!("redis-server found its port taken {ATTEMPTS} times; the last time:\n{log}")
                }
                Err(PortTaken(_)) => {}
            }
        }
        unreachable!("every attempt returns or panics")
    }

    /// `redis://` or `rediss://` for this server, with the password when it has one.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        match &self.options.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The URL without the password (for `USHER_REDIS_PASSWORD` or a wrong-password test).
    pub fn url_without_password(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate file that signed the server's certificate (TLS only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts redis-server on `self.port` and waits (at most 20 s) until it accepts
    /// connections; `Err` if the port was taken.
    fn launch(&mut self) -> Result<(), PortTaken> {
        let _ = std::fs::remove_file(self.log_file());
        let mut command = Command::new("redis-server");
        command
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_file())
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"]);
        if self.options.persist {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if let Some(password) = &self.options.password {
            // masterauth too: after a failover this server may be a replica of another.
            command.arg("--requirepass").arg(password).arg("--masterauth").arg(password);
        }
        if let Some(port) = self.options.replica_of {
            command.args(["--replicaof", "127.0.0.1", &port.to_string()]);
        }
        if self.options.cluster && self.options.tls {
            command.args(["--tls-cluster", "yes"]);
        }
        if self.options.cluster {
            // The cluster bus port is picked too: redis's default, the port + 10000, does not
            // exist above 55535, where many ephemeral ports are.
            command
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-port", &unused_port().to_string(), "--cluster-config-file"])
                .arg(self.dir.path().join("nodes.conf"));
        }
        if self.options.tls {
            let path = |name: &str| self.dir.path().join(name);
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(path("server.pem"))
                .arg("--tls-key-file")
                .arg(path("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(path("ca.pem"))
                .args(["--tls-auth-clients", "no", "--tls-replication", "yes"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (tests/run.sh installs it)");
        self.child = Some(child);
        let log = self.log_file();
        await_ready(&mut self.child, &log, "Ready to accept connections", "redis-server")
    }

    /// Stops the server at once (SIGKILL: no goodbye to the clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's process id (it must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// Sends a signal (e.g. "STOP", "CONT") with `kill`, as [`super::UsherProcess::signal`] does.
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Starts it again on the same port and directory (the data survives with `persist`).
    /// Its clients know the port, so it cannot move: if the port was taken while the server
    /// was down, the test fails and says so.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(PortTaken(log)) = self.launch() {
            panic!("port {} was taken while redis-server was stopped:\n{log}", self.port);
        }
    }

    /// Every byte Redis holds, as its snapshot file (`SAVE`), to search for what must not be there.
    pub fn snapshot(&self) -> Vec<u8> {
        assert_eq!(self.cli(&["SAVE"]).trim(), "OK", "SAVE");
        std::fs::read(self.dir.path().join("dump.rdb")).expect("read dump.rdb")
    }

    /// The directory of its files (certificates, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.options.tls {
            command.arg("--tls").arg("--cacert").arg(self.ca_file());
        }
        if let Some(password) = &self.options.password {
            command.env("REDISCLI_AUTH", password);
        }
        let out = command.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Waits (at most 20 s) until `log` shows `ready`; `Err` if the process exited because its
/// port was taken, a panic if it exited for another reason.
pub fn await_ready(child: &mut Option<Child>, log: &Path, ready: &str, what: &str) -> Result<(), PortTaken> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(ready) {
            return Ok(());
        }
        if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
            *child = None;
            // Read again: its last lines may have come after the read above.
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Address already in use") {
                return Err(PortTaken(text));
            }
            panic!("{what} exited ({status}):\n{text}");
        }
        assert!(Instant::now() < deadline, "{what} did not start within 20 s:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Redis process could not bind its port: somebody else has it. Holds its log.
pub struct PortTaken(pub String);

/// A loopback port that is free now: the kernel's pick for port 0, released at once for
/// redis-server to bind (which may fail, see the module's comment).
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a server certificate for 127.0.0.1 / localhost signed by it, as PEM files.
fn write_certificates(dir: &TempDir) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "usher test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("server params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
    std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write server.pem");
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write server.key");
}
