//! A Redis Cluster for the tests: three masters (real `redis-server --cluster-enabled`
//! processes on 127.0.0.1, ports picked as [`RedisServer`] picks them) joined by
//! `redis-cli --cluster create`, each owning a third of the slots; optionally over TLS, the
//! nodes' bus included.

use super::redis_server::{RedisOptions, RedisServer};
use std::process::Command;
use std::time::{Duration, Instant};

/// Three masters, killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, creates the cluster and waits (at most 20 s) until every node
    /// says `cluster_state:ok`.
    pub fn start(password: Option<&str>) -> Self {
        Self::start_with(RedisOptions { password: password.map(str::to_string), ..RedisOptions::default() })
    }

    /// The same with `options` for every node (`tls`: one CA for all, the first node's, as
    /// the nodes talk TLS to each other too).
    pub fn start_with(options: RedisOptions) -> Self {
        let options = RedisOptions { cluster: true, ..options };
        let first = RedisServer::start_with(options.clone());
        let shared = RedisOptions { certificates_from: options.tls.then(|| first.dir().to_path_buf()), ..options };
        let mut nodes = vec![first];
        nodes.extend((1..3).map(|_| RedisServer::start_with(shared.clone())));
        let mut create = Command::new("redis-cli");
        if shared.tls {
            create.arg("--tls").arg("--cacert").arg(nodes[0].ca_file());
        }
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.arg("--cluster-yes");
        if let Some(password) = &shared.password {
            create.env("REDISCLI_AUTH", password);
        }
        let out = create.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes.iter().all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the cluster was not ok within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { nodes }
    }

    /// `HOST:PORT` of every node, for `store.cluster`.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect()
    }

    /// `rediss://HOST:PORT` of every node (a TLS cluster).
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("rediss://127.0.0.1:{}", n.port)).collect()
    }

    /// The node (index) whose slots hold `key`.
    pub fn owner(&self, key: &str) -> usize {
        let slot: u16 = self.nodes[0].cli(&["CLUSTER", "KEYSLOT", key]).trim().parse().expect("a slot");
        let table = self.nodes[0].cli(&["CLUSTER", "NODES"]);
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(port) = fields.get(1).and_then(|a| a.split(['@', ':']).nth(1)).and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let owns = fields.iter().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(f), Ok(t)) if (f..=t).contains(&slot))
            });
            if owns {
                return self.nodes.iter().position(|n| n.port == port).expect("a node of this cluster");
            }
        }
        panic!("no node owns slot {slot} of {key}:\n{table}")
    }
}
