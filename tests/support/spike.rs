//! Spikes of visitors over several usher nodes, as the multi-node tests run them: a client
//! behind a load balancer that moves to the next node when its node is gone, what each client
//! saw, and the Kendall tau of admission order against ticket order.

use super::client::Reply;
use super::cookies::{PASS, TICKET, TicketBytes, decode_ticket, is_kind};
use super::visitor::{cookie_header, keep_cookies};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A browser-like client behind a load balancer: its own loopback address and cookie jar,
/// one kept-alive connection to its current node, and on a failed connection it moves to
/// the next node, as a load balancer would move it.
pub struct BalancedClient {
    pub ip: IpAddr,
    pub nodes: Vec<SocketAddr>,
    pub at: usize,
    pub jar: BTreeMap<String, String>,
    pub sender: Option<SendRequest<Empty<Bytes>>>,
    pub passes: Vec<String>,
}

impl BalancedClient {
    pub fn new(ip: IpAddr, nodes: Vec<SocketAddr>, at: usize) -> Self {
        Self { ip, nodes, at, jar: BTreeMap::new(), sender: None, passes: Vec::new() }
    }

    /// The ticket cookie it holds now, decoded.
    pub fn ticket(&self) -> TicketBytes {
        let raw = self.jar.iter().find(|(n, _)| is_kind(n, TICKET)).map(|(_, v)| v);
        decode_ticket(raw.unwrap_or_else(|| panic!("{} holds no ticket", self.ip)))
    }

    pub fn move_on(&mut self) {
        self.sender = None;
        self.at = (self.at + 1) % self.nodes.len();
    }

    async fn connect(&self) -> std::io::Result<SendRequest<Empty<Bytes>>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.ip, 0))?;
        let stream = socket.connect(self.nodes[self.at]).await?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// `GET path` as an app wanting JSON, on the current node or, if it is gone, the next.
    pub async fn get(&mut self, path: &str) -> Reply {
        let mut last_error = String::new();
        for _ in 0..40 {
            if self.sender.as_mut().is_none_or(|s| s.is_closed()) {
                match self.connect().await {
                    Ok(sender) => self.sender = Some(sender),
                    Err(e) => {
                        last_error = e.to_string();
                        self.move_on();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            let mut builder =
                Request::get(path).header(header::HOST, "mailbox.test").header(header::ACCEPT, "application/json");
            if let Some(cookies) = cookie_header(&self.jar) {
                builder = builder.header(header::COOKIE, cookies);
            }
            let Some(sender) = self.sender.as_mut() else { continue };
            if sender.ready().await.is_err() {
                self.move_on();
                continue;
            }
            let response = match sender.send_request(builder.body(Empty::new()).expect("request")).await {
                Ok(response) => response,
                Err(e) => {
                    last_error = e.to_string();
                    self.move_on();
                    continue;
                }
            };
            let (parts, body) = response.into_parts();
            let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                self.move_on();
                continue;
            };
            let reply = Reply::new(parts, body);
            for (name, value) in keep_cookies(&mut self.jar, &reply) {
                if is_kind(&name, PASS) {
                    self.passes.push(value);
                }
            }
            return reply;
        }
        panic!("GET {path} from {} failed on every node: {last_error}", self.ip);
    }
}

/// What one spike client saw.
pub struct Record {
    pub ticket: Option<u64>,
    /// When the last request that found it still waiting was sent.
    pub last_waiting_sent: Option<Instant>,
    /// When the answer that admitted it arrived.
    pub admitted_seen: Instant,
    pub passes: Vec<String>,
}

/// Kendall's tau between ticket order and admission order, over the pairs whose order the
/// clients could observe: (a, b) with ticket a < b is in order if a was seen admitted before
/// b was last seen waiting, out of order (an overtake) if b was seen admitted before a was
/// last seen waiting; otherwise both turns came within one poll and the pair is a tie.
pub fn kendall_tau(queued: &[&Record]) -> (f64, u64, u64, u64) {
    let (mut concordant, mut discordant, mut ties) = (0u64, 0u64, 0u64);
    for (i, a) in queued.iter().enumerate() {
        for b in &queued[i + 1..] {
            let (a, b) = if a.ticket < b.ticket { (a, b) } else { (b, a) };
            let (Some(a_waiting), Some(b_waiting)) = (a.last_waiting_sent, b.last_waiting_sent) else { continue };
            if b.admitted_seen < a_waiting {
                discordant += 1;
            } else if a.admitted_seen < b_waiting {
                concordant += 1;
            } else {
                ties += 1;
            }
        }
    }
    let decided = concordant + discordant;
    let tau = if decided == 0 { 0.0 } else { (concordant as f64 - discordant as f64) / decided as f64 };
    (tau, concordant, discordant, ties)
}

/// The room of the spike tests: a room `spike` over the whole mailbox, limits out of the way
/// (so only the room decides who waits). What the tests vary is here; the rest is fixed.
#[derive(Debug, Clone)]
pub struct SpikeRoom {
    pub max_active: u64,
    pub mode: &'static str,
    pub admit_per_minute: u64,
    pub waiter_ttl: &'static str,
    pub hold: &'static str,
    pub tick: &'static str,
}

impl SpikeRoom {
    pub fn new(max_active: u64) -> Self {
        Self { max_active, mode: "auto", admit_per_minute: 60_000, waiter_ttl: "60s", hold: "10m", tick: "50ms" }
    }
}

/// One node's configuration for a spike test: on Redis at `redis_url`, or on the memory
/// store with None. The restart, multi-node, Sentinel and outage tests share it.
pub fn spike_config(backend: SocketAddr, redis_url: Option<&str>, room: &SpikeRoom) -> String {
    let store = redis_url.map(|url| format!("[store]\nkind = \"redis\"\nurl = \"{url}\"\n")).unwrap_or_default();
    let SpikeRoom { max_active, mode, admit_per_minute, waiter_ttl, hold, tick } = room;
    format!(
        r#"[listen]
http = "127.0.0.1:0"
workers = 2

[admin]
listen = "127.0.0.1:0"

[upstream]
addresses = ["{backend}"]

{store}
[limits]
requests_per_second = 1000000
burst = 1000000
joins_per_minute = 1000000
join_burst = 1000000
polls_per_second = 1000000
poll_burst = 1000000

[[room]]
name = "spike"
paths = ["/"]
max_active = {max_active}
mode = "{mode}"
admit_per_minute = {admit_per_minute}
session_idle = "2m"
waiter_ttl = "{waiter_ttl}"
hold = "{hold}"
claim_window = "30s"
logout_path = "/logout"
tick = "{tick}"
"#
    )
}

/// What every task of a spike returned, in order, once all are done; fails the test if one
/// failed or if they take longer than `within` (`what` names them in the message).
pub async fn all_within<T>(tasks: Vec<tokio::task::JoinHandle<T>>, within: Duration, what: &str) -> Vec<T> {
    let all = async {
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(task.await.unwrap_or_else(|e| panic!("one of the {what} failed: {e}")));
        }
        out
    };
    tokio::time::timeout(within, all).await.unwrap_or_else(|_| panic!("the {what} were not all done within {within:?}"))
}
