//! usher on a Redis Cluster (DESIGN §8): a room's keys share the hash tag `{usher:ROOM}`, so
//! its scripts run unchanged in one slot; two rooms whose slots are on different masters are
//! each admitted in order, by two nodes, with the password from `USHER_REDIS_PASSWORD`; and a
//! cluster over TLS works with the operator's CA.
//!
//! Every process is real: two usher binaries and three cluster masters.

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{Logs, RedisCluster, RedisOptions, Upstream, UsherProcess, Visitor, ip};

const SECRET: &str = "0123456789abcdef0123456789abcdef-cluster-tests";
const PASSWORD: &str = "door-cluster-4711";

fn node_config(backend: SocketAddr, cluster: &[String], rooms: &[String; 2]) -> String {
    let nodes: Vec<String> = cluster.iter().map(|n| format!("\"{n}\"")).collect();
    let mut config = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nworkers = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream]\naddresses = [\"{backend}\"]\n\n[store]\nkind = \"redis\"\ncluster = [{}]\n",
        nodes.join(", ")
    );
    for room in rooms {
        config.push_str(&format!(
            "\n[[room]]\nname = \"{room}\"\npaths = [\"/{room}/\"]\nmax_active = 1\nlogout_path = \"/{room}/logout\"\n\
             tick = \"50ms\"\nwaiter_ttl = \"60s\"\n"
        ));
    }
    config
}

/// In `room`: the first visitor (on node A) is admitted at once; the second (on node B) is
/// queued; when the first logs out through node B, the second's turn comes, on node A.
async fn room_admits_in_turn(room: &str, a: SocketAddr, b: SocketAddr, family: u8) {
    let mut first = Visitor::new(ip(family, 1), a);
    assert!(first.api(&format!("/{room}/inbox")).await.forwarded(), "{room}: the first visitor is admitted");
    let mut second = Visitor::new(ip(family, 2), b);
    let queued = second.api(&format!("/{room}/inbox")).await;
    assert_eq!(queued.status, StatusCode::SERVICE_UNAVAILABLE, "{room}: {}", queued.text());
    assert_eq!(queued.json()["status"], "waiting", "{room}: {}", queued.text());

    let mut first_on_b = Visitor::new(ip(family, 1), b);
    first_on_b.jar = first.jar.clone();
    assert!(first_on_b.api(&format!("/{room}/logout")).await.forwarded(), "{room}: logout is forwarded");

    let mut second_on_a = Visitor::new(ip(family, 2), a);
    second_on_a.jar = second.jar.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = second_on_a.status().await;
        if status["status"] == "admitted" {
            break;
        }
        assert_eq!(status["status"], "waiting", "{room}: {status}");
        assert!(Instant::now() < deadline, "{room}: the second visitor's turn did not come within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(second_on_a.api(&format!("/{room}/inbox")).await.forwarded(), "{room}: its pass is honoured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_different_cluster_masters_each_admit_in_turn() {
    let started = Instant::now();
    let cluster = RedisCluster::start(Some(PASSWORD));
    // Two rooms whose hash tags land on two different masters.
    let owner = |room: &str| cluster.owner(&format!("{{usher:{room}}}:limits"));
    let first = "tickets".to_string();
    let second = (0..100)
        .map(|n| format!("room{n}"))
        .find(|room| owner(room) != owner(&first))
        .expect("a room on another master");
    let rooms = [first, second];

    let backend = Upstream::start_mailbox().await;
    let config = node_config(backend.addr, &cluster.addresses(), &rooms);
    let env = [("USHER_SECRET", SECRET), ("USHER_REDIS_PASSWORD", PASSWORD)];
    let a = UsherProcess::spawn(&config, Logs::Text, &env);
    let b = UsherProcess::spawn(&config, Logs::Text, &env);

    for (family, room) in [(6, &rooms[0]), (7, &rooms[1])] {
        room_admits_in_turn(room, a.http_addr, b.http_addr, family).await;
    }
    for room in &rooms {
        let on = owner(room);
        let key = format!("{{usher:{room}}}:sessions:seen");
        assert_eq!(cluster.nodes[on].cli(&["EXISTS", &key]).trim(), "1", "{key} is on the master of its slot");
    }
    assert_ne!(owner(&rooms[0]), owner(&rooms[1]));
    eprintln!(
        "rooms {:?} on master {} and {:?} on master {} admitted in turn by two nodes; total {:?}",
        rooms[0],
        owner(&rooms[0]),
        rooms[1],
        owner(&rooms[1]),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_admits_with_the_operators_ca() {
    let cluster = RedisCluster::start_with(RedisOptions { tls: true, ..RedisOptions::default() });
    let backend = Upstream::start_mailbox().await;
    let rooms = ["secure".to_string(), "unused".to_string()];
    let config = node_config(backend.addr, &cluster.tls_urls(), &rooms);
    let ca = cluster.nodes[0].ca_file();
    let env = [("USHER_SECRET", SECRET), ("SSL_CERT_FILE", ca.to_str().expect("a UTF-8 path"))];
    let node = UsherProcess::spawn(&config, Logs::Text, &env);
    room_admits_in_turn(&rooms[0], node.http_addr, node.http_addr, 8).await;
    let on = cluster.owner("{usher:secure}:limits");
    assert_eq!(cluster.nodes[on].cli(&["EXISTS", "{usher:secure}:sessions:seen"]).trim(), "1");
}
