//! The real `usher` binary as a child process: config written to a temporary directory,
//! addresses read from its `listening (...)` log lines, every stderr line kept for asserts.

use super::TempDir;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Log format of the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    Text,
    Json,
}

/// A running `usher run --config FILE`; killed on drop if still running.
pub struct UsherProcess {
    child: Child,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

/// A config file for the binary: loopback, ephemeral ports, the given upstreams, plus
/// extra TOML lines for the `[listen]` and `[upstream]` sections.
pub fn binary_config(upstreams: &[SocketAddr], extra_listen: &str, extra_upstream: &str) -> String {
    let addresses: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nworkers = 2\n{extra_listen}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream]\naddresses = [{}]\n{extra_upstream}\n",
        addresses.join(", ")
    )
}

/// Removes ANSI colour sequences, which the text format may add.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address a `listening (what)` line announces, in either log format.
pub fn listening_addr(line: &str, what: &str) -> Option<SocketAddr> {
    let message = format!("listening ({what})");
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(line) {
        if fields.get("message").and_then(|m| m.as_str()) == Some(message.as_str()) {
            return fields.get("addr")?.as_str()?.parse().ok();
        }
        return None;
    }
    let line = strip_ansi(line);
    if !line.contains(&message) {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

impl UsherProcess {
    /// Starts the binary with `config` (TOML text), waiting (at most 30 s) until it announces
    /// its http and admin addresses.
    pub fn spawn(config: &str, logs: Logs, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("process");
        let path = dir.path().join("usher.toml");
        std::fs::write(&path, config).expect("write the config file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_usher"));
        command.arg("run").arg("--config").arg(&path);
        if logs == Logs::Json {
            command.args(["--log-format", "json"]);
        }
        command.env_remove("USHER_LOG").env_remove("USHER_CONFIG").env("NO_COLOR", "1");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the usher binary");

        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                kept.lock().expect("log lock").push(line.clone());
                let _ = tx.send(line);
            }
        });

        let (mut http, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    http = http.or_else(|| listening_addr(&line, "http"));
                    admin = admin.or_else(|| listening_addr(&line, "admin"));
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    let logs = lines.lock().expect("log lock").join("\n");
                    panic!("usher did not announce its addresses ({status:?}); stderr:\n{logs}\nconfig:\n{config}");
                }
            }
        }
        Self {
            child,
            http_addr: http.expect("http address"),
            admin_addr: admin.expect("admin address"),
            lines,
            reader: Some(reader),
            _dir: dir,
        }
    }

    /// The configuration file it runs with (rewrite it, then send `HUP`, to reload).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("usher.toml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. "TERM") with `kill`, as an operator or orchestrator would.
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (at most 30 s, without blocking the async runtime) for the process to exit,
    /// then for its last log lines.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("usher did not exit within 30 s; stderr:\n{}", self.logs().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(reader) = self.reader.take() {
            let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        }
        status
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    /// A field of `/proc/PID/status` in KiB (e.g. "VmHWM", the peak resident set).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }
}

impl Drop for UsherProcess {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
