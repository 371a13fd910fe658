//! Where usher's Redis is (DESIGN §8): one server (`store.url = "redis://…"`), the master a
//! set of sentinels names (`store.url = "redis+sentinel://HOST:PORT,HOST:PORT/MASTER"`), or a
//! cluster (`store.cluster = ["HOST:PORT", …]`). Read and checked with the file, so a typo is
//! a config error naming its key rather than a connection error at start-up.

/// The port sentinels listen on unless the URL says otherwise.
const SENTINEL_PORT: u16 = 26379;

/// How usher reaches its Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One redis-server: a `redis://` or `rediss://` URL, given to the redis crate as is.
    Server { url: String },
    /// The master that the sentinels name; looked up again after a failover.
    Sentinel(SentinelTarget),
    /// A Redis Cluster, found through any of these nodes (`redis://` or `rediss://` URLs).
    Cluster { nodes: Vec<String> },
}

/// A `redis+sentinel://` (or `rediss+sentinel://`, TLS) URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The URL as written, for messages (shown through [`redacted`]).
    pub url: String,
    /// The sentinels, asked in this order.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels know the master by (`sentinel monitor NAME …`).
    pub master: String,
    /// TLS to the sentinels and the master.
    pub tls: bool,
    /// `user:password` as written (percent-encoded): the master's credentials, not the
    /// sentinels'.
    pub userinfo: Option<String>,
    pub db: i64,
}

impl RedisTarget {
    /// `store.url`: a single server or a Sentinel URL.
    pub fn from_url(url: &str) -> Result<Self, String> {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(Self::Server { url: url.to_string() });
        }
        let tls = match url.split_once("://") {
            Some(("redis+sentinel", _)) => false,
            Some(("rediss+sentinel", _)) => true,
            _ => {
                return Err(format!(
                    "{:?} must start with redis://, rediss:// or redis+sentinel:// (rediss+sentinel:// with TLS)",
                    redacted(url)
                ));
            }
        };
        let shown = redacted(url);
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo.to_string()), hosts),
            None => (None, authority),
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            let host = host.trim();
            if host.is_empty() {
                return Err(format!("{shown:?} has an empty sentinel address (HOST:PORT,HOST:PORT)"));
            }
            sentinels.push(host_port(host, SENTINEL_PORT).map_err(|e| format!("{shown:?}: {e}"))?);
        }
        if path.contains(['?', '#']) {
            return Err(format!("{shown:?}: query parameters are not supported"));
        }
        let mut segments = path.split('/');
        let master = segments.next().unwrap_or_default();
        if master.is_empty() {
            return Err(format!("{shown:?} names no master: end it with /MASTER_NAME (sentinel monitor NAME …)"));
        }
        let db = match segments.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| format!("{shown:?}: {db:?} after the master's name is not a database number"))?,
        };
        if segments.next().is_some() {
            return Err(format!("{shown:?}: the path is /MASTER_NAME or /MASTER_NAME/DB"));
        }
        Ok(Self::Sentinel(SentinelTarget {
            url: url.to_string(),
            sentinels,
            master: master.to_string(),
            tls,
            userinfo,
            db,
        }))
    }

    /// `store.cluster`: nodes as `HOST:PORT`, or as `redis://`/`rediss://` URLs (all the
    /// same scheme; a password in them is the cluster's).
    pub fn cluster(nodes: &[String]) -> Result<Self, String> {
        if nodes.is_empty() {
            return Err("lists no node: give one or more of the cluster's HOST:PORT".into());
        }
        let mut urls = Vec::with_capacity(nodes.len());
        for node in nodes {
            let url = if node.starts_with("redis://") || node.starts_with("rediss://") {
                node.clone()
            } else if node.contains("://") {
                return Err(format!("{:?} must be HOST:PORT, redis://… or rediss://…", redacted(node)));
            } else {
                let (host, port) = host_port(node, 6379)?;
                if host.contains(':') { format!("redis://[{host}]:{port}") } else { format!("redis://{host}:{port}") }
            };
            urls.push(url);
        }
        if urls.iter().any(|u| u.starts_with("rediss://")) && urls.iter().any(|u| u.starts_with("redis://")) {
            return Err("mixes redis:// and rediss://: a cluster is reached with TLS on every node or none".into());
        }
        Ok(Self::Cluster { nodes: urls })
    }

    /// The key of the file that says where Redis is, for messages.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Server { .. } | Self::Sentinel(_) => "store.url",
            Self::Cluster { .. } => "store.cluster",
        }
    }

    /// Where Redis is, as the operator wrote it, passwords replaced by `***`.
    pub fn shown(&self) -> String {
        match self {
            Self::Server { url } => redacted(url),
            Self::Sentinel(s) => redacted(&s.url),
            Self::Cluster { nodes } => {
                let nodes: Vec<String> = nodes.iter().map(|n| format!("{:?}", redacted(n))).collect();
                format!("[{}]", nodes.join(", "))
            }
        }
    }

    /// One line for `check-config`.
    pub fn summary(&self) -> String {
        match self {
            Self::Server { .. } => "redis (one server)".into(),
            Self::Sentinel(s) => format!("redis (master {:?} through {} sentinel(s))", s.master, s.sentinels.len()),
            Self::Cluster { nodes } => format!("redis (cluster, {} seed node(s))", nodes.len()),
        }
    }
}

/// `HOST:PORT`, `HOST` (the default port) or `[IPv6]:PORT`.
fn host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']').ok_or_else(|| format!("{s:?}: an IPv6 address needs its ']'"))?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| format!("{s:?} is not HOST:PORT"))?)),
            }
        }
        None => match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        },
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(format!("{s:?} is not HOST:PORT"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{s:?}: {p:?} is not a port"))?,
    };
    Ok((host.to_string(), port))
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split_once(':').map_or(&rest[..at], |(user, _)| user);
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redacted("redis://:hunter2@db:6379/0"), "redis://:***@db:6379/0");
        assert_eq!(redacted("rediss://usher:hunter2@db:6380"), "rediss://usher:***@db:6380");
        assert_eq!(redacted("redis://db:6379"), "redis://db:6379");
        assert_eq!(redacted("redis+sentinel://:hunter2@a:1,b:2/m"), "redis+sentinel://:***@a:1,b:2/m");
    }

    #[test]
    fn a_sentinel_url_names_its_sentinels_and_master() {
        let RedisTarget::Sentinel(s) =
            RedisTarget::from_url("rediss+sentinel://u:p%40ss@10.0.0.1:26380,sentinel-b,[::1]:5/main/2").unwrap()
        else {
            panic!("a sentinel target")
        };
        assert_eq!(s.sentinels, vec![("10.0.0.1".into(), 26380), ("sentinel-b".into(), 26379), ("::1".into(), 5)]);
        assert_eq!((s.master.as_str(), s.db, s.tls, s.userinfo.as_deref()), ("main", 2, true, Some("u:p%40ss")));
        for bad in [
            "redis+sentinel://a:1,b:2",
            "redis+sentinel://a:1,b:2/",
            "redis+sentinel://a:1,,b:2/m",
            "redis+sentinel://a:99999/m",
            "redis+sentinel://a:1/m/x",
            "redis+sentinel://a:1/m?x=1",
            "sentinel://a:1/m",
        ] {
            assert!(RedisTarget::from_url(bad).is_err(), "{bad}");
        }
        let err = RedisTarget::from_url("redis+sentinel://:secret@a:1").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn cluster_nodes_are_urls_of_one_scheme() {
        let nodes = |n: &[&str]| RedisTarget::cluster(&n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            nodes(&["10.0.0.1:7000", "db"]).unwrap(),
            RedisTarget::Cluster { nodes: vec!["redis://10.0.0.1:7000".into(), "redis://db:6379".into()] }
        );
        assert!(nodes(&[]).is_err());
        assert!(nodes(&["redis://a:1", "rediss://b:2"]).is_err());
        assert!(nodes(&["a:notaport"]).is_err());
        assert!(nodes(&["http://a:1"]).is_err());
    }
}
