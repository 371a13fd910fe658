//! usher's own view during the run, from its `/metrics` on the admin listener: grants
//! (`usher_wait_seconds_count`, one per admission from the line, counted at the grant, not
//! at the claim), the line's length and the configured outflow. Optional: the visitors'
//! figures stand on their own; these make the outflow exact.

use bytes::Bytes;
use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where to read usher's metrics, and for which room (all rooms summed when `None`).
#[derive(Debug, Clone)]
pub struct Target {
    pub admin: SocketAddr,
    pub room: Option<String>,
}

/// usher's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSample {
    /// Seconds since the start of the run.
    pub t: f64,
    /// Admissions from the line so far (grants).
    pub granted: f64,
    pub admitted_direct: f64,
    pub waiting: f64,
    /// The `admit_per_minute` in force (`usher_outflow_per_minute{kind="effective"}`): the
    /// file's, an operator's, or the adaptive controller's.
    pub configured_per_minute: f64,
}

/// Reads the figures of `room` (or of every room) from Prometheus text.
pub fn parse(text: &str, room: Option<&str>) -> ServerSample {
    let mut s = ServerSample::default();
    let room_label = room.map(|r| format!("room=\"{r}\""));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        if room_label.as_ref().is_some_and(|r| !labels.contains(r.as_str())) {
            continue;
        }
        match name {
            "usher_wait_seconds_count" => s.granted += value,
            "usher_waiting" => s.waiting += value,
            "usher_outflow_per_minute" if labels.contains("kind=\"effective\"") => s.configured_per_minute += value,
            "usher_admitted_total" if labels.contains("via=\"direct\"") => s.admitted_direct += value,
            _ => {}
        }
    }
    s
}

/// Fetches `/metrics` once.
pub async fn fetch(admin: SocketAddr) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(admin).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/metrics").header(HOST, admin.to_string()).body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        return Err(format!("/metrics answered {}", response.status()).into());
    }
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Samples every `every` until `stop` turns true. Failed scrapes are skipped and counted.
pub async fn sample(
    target: Target,
    start: Instant,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> (Vec<ServerSample>, u32) {
    let mut samples = Vec::new();
    let mut failed = 0;
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // One last sample when told to stop (or when the sender is gone).
        let stopping = tokio::select! {
            _ = interval.tick() => false,
            _ = stop.changed() => true,
        };
        let at = Instant::now();
        match tokio::time::timeout(every.max(Duration::from_secs(1)), fetch(target.admin)).await {
            Ok(Ok(text)) => {
                let mut s = parse(&text, target.room.as_deref());
                s.t = at.saturating_duration_since(start).as_secs_f64();
                samples.push(s);
            }
            _ => failed += 1,
        }
        if stopping || *stop.borrow() {
            return (samples, failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_figures_are_read_from_prometheus_text() {
        let text = "# HELP usher_waiting Waiters in line.\n\
                    usher_waiting{room=\"a\"} 12\n\
                    usher_waiting{room=\"b\"} 5\n\
                    usher_wait_seconds_count{room=\"a\"} 300\n\
                    usher_wait_seconds_sum{room=\"a\"} 9.5\n\
                    usher_outflow_per_minute{room=\"a\",kind=\"configured\"} 600\n\
                    usher_outflow_per_minute{room=\"a\",kind=\"effective\"} 60000\n\
                    usher_outflow_per_minute{room=\"a\",kind=\"measured\"} 59000\n\
                    usher_admitted_total{room=\"a\",via=\"direct\"} 7\n\
                    usher_admitted_total{room=\"a\",via=\"queue\"} 290\n";
        let a = parse(text, Some("a"));
        assert_eq!((a.waiting, a.granted, a.configured_per_minute, a.admitted_direct), (12.0, 300.0, 60000.0, 7.0));
        assert_eq!(parse(text, None).waiting, 17.0);
        assert_eq!(parse(text, Some("c")), ServerSample::default());
    }
}
