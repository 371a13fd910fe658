//! Properties of every parser of untrusted input (issue "hostile clients"): usher's cookies,
//! the forwarding headers, the PROXY v2 header and the configuration file. Generated inputs,
//! mutated valid ones above all: no forgery is ever accepted and nothing panics.
//!
//! Cases per property: `USHER_PROPTEST_CASES` (default 20,000 here, so CI stays quick;
//! `USHER_PROPTEST_CASES=250000 cargo test --test parser_props` is the run the README reports).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::net::{IpAddr, SocketAddr};
use usher::config::RealIpFrom;
use usher::identity::{self, ClientSource};
use usher::room::tokens::{Pass, Rejection, Sealer, Shown, Ticket};
use usher::secrets::Secrets;

fn cases() -> u32 {
    std::env::var("USHER_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() })
}

fn sealer(byte: u8) -> Sealer {
    Sealer::new(&Secrets::new(vec![vec![byte; 32]]).expect("a secret"))
}

/// What an attacker does to a cookie it holds.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { at: usize, bit: u8 },
    Truncate(usize),
    Extend(Vec<u8>),
    ReplaceChar { at: usize, with: char },
    Splice { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..8).prop_map(Mutation::Extend),
        (any::<usize>(), any::<char>()).prop_map(|(at, with)| Mutation::ReplaceChar { at, with }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(at, bytes)| Mutation::Splice { at, bytes }),
    ]
}

/// Applies `m` to the decoded bytes (or the text, for character replacement).
fn mutate(cookie: &str, m: &Mutation) -> String {
    let mut raw = URL_SAFE_NO_PAD.decode(cookie).expect("a sealed cookie decodes");
    match m {
        Mutation::FlipBit { at, bit } => {
            let i = at % raw.len();
            raw[i] ^= 1 << bit;
        }
        Mutation::Truncate(n) => raw.truncate(n % raw.len()),
        Mutation::Extend(bytes) => raw.extend_from_slice(bytes),
        Mutation::ReplaceChar { at, with } => {
            let mut chars: Vec<char> = cookie.chars().collect();
            let i = at % chars.len();
            chars[i] = *with;
            return chars.into_iter().collect();
        }
        Mutation::Splice { at, bytes } => {
            let i = at % raw.len();
            raw.splice(i..i, bytes.iter().copied());
        }
    }
    URL_SAFE_NO_PAD.encode(raw)
}

#[test]
fn no_mutated_resigned_or_replayed_cookie_is_accepted() {
    let ours = sealer(1);
    let theirs = sealer(2);
    // A ticket with or without what its waiter was shown (the two lengths of version 2).
    let shown =
        proptest::option::of((any::<u64>(), any::<u64>()).prop_map(|(ahead, granted)| Shown { ahead, granted }));
    let strategy = (any::<u64>(), any::<u64>(), any::<u128>(), 1u64..4_000_000_000, 1u64..100_000, mutation(), shown);
    runner()
        .run(&strategy, |(generation, number, session, issued, life, m, shown)| {
            let (room, other_room) = (7, 8);
            let now = issued;
            let pass = Pass { room, generation, session, issued_secs: issued, expires_secs: issued + life };
            let joined_ms = issued * 1000 - life;
            let ticket = Ticket { room, generation, number, joined_ms, renewed_secs: issued + life, shown };
            let (good_pass, good_ticket) = (ours.seal_pass(&pass), ours.seal_ticket(&ticket));
            prop_assert_eq!(ours.open_pass(&good_pass, room, now), Ok(pass));
            prop_assert_eq!(ours.open_ticket(&good_ticket, room), Ok(ticket));

            // Mutated: never accepted, unless the mutation changed nothing.
            for (good, is_pass) in [(&good_pass, true), (&good_ticket, false)] {
                let bad = mutate(good, &m);
                let accepted = if is_pass {
                    ours.open_pass(&bad, room, now).is_ok()
                } else {
                    ours.open_ticket(&bad, room).is_ok()
                };
                prop_assert!(!accepted || bad == *good, "a forgery was accepted: {:?} from {:?}", bad, m);
            }
            // Signed with another secret: a signature error, never a pass.
            prop_assert_eq!(ours.open_pass(&theirs.seal_pass(&pass), room, now), Err(Rejection::Signature));
            prop_assert_eq!(ours.open_ticket(&theirs.seal_ticket(&ticket), room), Err(Rejection::Signature));
            // Replayed into another room, or read as the other kind: refused.
            prop_assert_eq!(ours.open_pass(&good_pass, other_room, now), Err(Rejection::WrongRoom));
            prop_assert_eq!(ours.open_ticket(&good_ticket, other_room), Err(Rejection::WrongRoom));
            prop_assert_eq!(ours.open_pass(&good_ticket, room, now), Err(Rejection::Malformed));
            prop_assert!(ours.open_ticket(&good_pass, room).is_err());
            Ok(())
        })
        .expect("0 forgeries accepted");
}

#[test]
fn random_cookie_text_is_never_a_pass_and_never_panics() {
    let ours = sealer(1);
    runner()
        .run(&prop_oneof!["[A-Za-z0-9_-]{0,100}", ".{0,100}"], |text| {
            prop_assert!(ours.open_pass(&text, 7, 1).is_err());
            prop_assert!(ours.open_ticket(&text, 7).is_err());
            Ok(())
        })
        .expect("random text is refused");
}

/// Forwarding header values: lists of plausible and implausible nodes.
fn forwarding_value() -> impl Strategy<Value = String> {
    let node = prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::from(o).to_string()),
        any::<[u8; 16]>().prop_map(|o| format!("\"[{}]:443\"", IpAddr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::from(o).to_string()),
        Just("unknown".to_string()),
        Just("10.1.2.3".to_string()),
        ".{0,20}",
        "[0-9a-fA-F:.%\\[\\]\"]{0,40}",
    ];
    let element = prop_oneof![
        node.clone(),
        node.clone().prop_map(|n| format!("for={n}")),
        node.prop_map(|n| format!("for={n};proto=https;by=10.0.0.1")),
    ];
    prop::collection::vec(element, 0..6).prop_map(|parts| parts.join(", "))
}

#[test]
fn forwarding_headers_never_panic_and_are_believed_only_from_trusted_peers() {
    let trusted = vec!["10.0.0.0/8".parse().expect("cidr")];
    let sources =
        [RealIpFrom::XForwardedFor, RealIpFrom::Forwarded].map(|from| ClientSource { trusted: trusted.clone(), from });
    let strategy = (forwarding_value(), forwarding_value(), any::<[u8; 4]>(), any::<bool>());
    runner()
        .run(&strategy, |(xff, fwd, peer, tls)| {
            let mut headers = HeaderMap::new();
            for (name, value) in [("x-forwarded-for", &xff), ("forwarded", &fwd)] {
                if let Ok(value) = value.parse() {
                    headers.insert(name, value);
                }
            }
            let peer = IpAddr::from(peer);
            for source in &sources {
                let client = identity::client_addr(peer, tls, &headers, source);
                let from_trusted = trusted.iter().any(|net: &ipnet::IpNet| net.contains(&peer));
                if !from_trusted {
                    prop_assert_eq!(client.ip, peer, "an untrusted peer's headers are ignored");
                    prop_assert_eq!(client.https, tls);
                }
                // The believed address is the peer or one written in the believed header.
                let believed = if source.from == RealIpFrom::Forwarded { &fwd } else { &xff };
                prop_assert!(client.ip == peer || believed.contains(&client.ip.to_string()) || client.ip.is_ipv6());
            }
            Ok(())
        })
        .expect("forwarding headers");
}

#[test]
fn proxy_v2_headers_never_panic_and_valid_ones_round_trip() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let address = prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ];
    let strategy = (address, prop::collection::vec(any::<u8>(), 0..64), mutation(), any::<bool>());
    runner()
        .run(&strategy, |(source, junk, m, mutate_it)| {
            let destination = SocketAddr::from(([127, 0, 0, 1], 8080));
            let header = usher::proxy_protocol::encode_v2(source, destination);
            let read = |bytes: Vec<u8>| {
                runtime.block_on(async move {
                    let mut input = bytes.as_slice();
                    usher::proxy_protocol::read_v2(&mut input).await.ok().flatten()
                })
            };
            if source.ip().is_ipv4() || !source.ip().to_canonical().is_ipv4() {
                prop_assert_eq!(read(header.clone()), Some(source));
            }
            // Junk alone, junk after a valid header, and mutated headers: answers, no panic.
            let _ = read(junk.clone());
            let mut followed = header.clone();
            followed.extend_from_slice(&junk);
            let _ = read(followed);
            if mutate_it {
                let text = URL_SAFE_NO_PAD.encode(&header);
                let bad = URL_SAFE_NO_PAD.decode(mutate(&text, &m)).unwrap_or_default();
                let _ = read(bad);
            }
            Ok(())
        })
        .expect("PROXY v2");
}

/// Configuration text built from the real keys with values of every TOML type.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "http",
        "https",
        "workers",
        "max_connections",
        "header_read_timeout",
        "listen",
        "addresses",
        "trusted_proxies",
        "real_ip_from",
        "ipv6_prefix",
        "ipv6_site_prefix",
        "kind",
        "url",
        "requests_per_second",
        "burst",
        "name",
        "paths",
        "hosts",
        "bypass",
        "max_active",
        "admit_per_minute",
        "waiter_ttl",
        "mode",
        "opens_at",
        "tick",
        "cookie_secure",
        "token_file",
        "poll_burst",
        "method",
        "path",
        "per_minute",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[ -~]{0,24}\"",
        Just("\"10s\"".to_string()),
        Just("\"/a/../b\"".to_string()),
        Just("[\"/\", \"/x%2F\"]".to_string()),
        Just("[\"10.0.0.0/8\", \"zz\"]".to_string()),
        Just("true".to_string()),
        Just("1.5".to_string()),
    ];
    let section = prop::sample::select(vec![
        "[listen]",
        "[admin]",
        "[upstream]",
        "[client]",
        "[store]",
        "[limits]",
        "[[room]]",
        "[[limits.route]]",
        "[bogus]",
    ]);
    let line =
        prop_oneof![(key, value).prop_map(|(k, v)| format!("{k} = {v}")), section.prop_map(String::from), ".{0,20}"];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

#[test]
fn no_configuration_text_makes_validation_panic() {
    runner()
        .run(&config_text(), |text| {
            match usher::config::Config::parse(&text) {
                Ok(config) => {
                    let _ = config.summary();
                }
                Err(errors) => prop_assert!(errors.0.iter().all(|e| !e.key.is_empty() && !e.reason.is_empty())),
            }
            Ok(())
        })
        .expect("configuration validation");
}
