//! What one visitor lived through, as the report needs it. Times are microseconds since the
//! start of the run, on the load generator's clock.

use serde::Serialize;
use std::fmt;

/// The three kinds of request a visitor makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// The first request to a room path: a ticket, or admission at once.
    Join,
    /// `GET /.usher/status` while waiting.
    Status,
    /// Requests to the mailbox with the pass, after admission.
    Mailbox,
}

impl Route {
    pub const ALL: [Route; 3] = [Route::Join, Route::Status, Route::Mailbox];

    pub fn label(self) -> &'static str {
        match self {
            Route::Join => "join",
            Route::Status => "status",
            Route::Mailbox => "mailbox",
        }
    }
}

/// What went wrong with one request or one visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// The connection could not be opened.
    Connect,
    /// No answer within the request timeout.
    Timeout,
    /// The HTTP exchange broke (reset, malformed answer).
    Protocol,
    /// An HTTP status the visitor did not expect here (429, 502, ...).
    Status(u16),
    /// The answer was not the JSON usher sends.
    BadJson,
    /// A queue answer without a ticket, or an admission without a pass.
    MissingCookie,
    /// usher says the place is gone (`expired` or `none`) while the visitor kept polling.
    PlaceLost,
    /// The room is closed.
    Closed,
    /// usher could not reach its store (the visitor keeps polling).
    Unavailable,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect => f.write_str("connect"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Protocol => f.write_str("protocol"),
            Failure::Status(code) => write!(f, "http_{code}"),
            Failure::BadJson => f.write_str("bad_json"),
            Failure::MissingCookie => f.write_str("missing_cookie"),
            Failure::PlaceLost => f.write_str("place_lost"),
            Failure::Closed => f.write_str("closed"),
            Failure::Unavailable => f.write_str("unavailable"),
        }
    }
}

impl Failure {
    /// Whether the visitor gives up on it (else it keeps polling, as usher's page does).
    pub fn ends_visit(self) -> bool {
        matches!(self, Failure::MissingCookie | Failure::PlaceLost | Failure::Closed)
    }
}

/// One request's timing.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub route: Route,
    pub sent_us: u64,
    pub latency_us: u32,
    /// The HTTP status, 0 when there was no answer.
    pub status: u16,
}

/// How the visit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Let in by the join request itself (nobody waited and there was room).
    Direct,
    /// Let in after waiting in line.
    FromLine,
    /// Not let in: an error ended the visit, or the run's time limit came first.
    No,
}

/// One visitor's visit.
#[derive(Debug, Clone)]
pub struct VisitorRecord {
    pub index: u64,
    /// When the join request was sent.
    pub join_sent_us: Option<u64>,
    /// When the join answer arrived.
    pub join_answered_us: Option<u64>,
    /// The ticket number usher issued (read from the `usher_ticket` cookie).
    pub ticket: Option<u64>,
    /// Joined before the event opened: usher draws these visitors' order at random.
    pub prequeued: bool,
    /// The estimate (`eta_seconds`) and place (`ahead`) shown in the join answer.
    pub eta_at_join_s: Option<u64>,
    pub ahead_at_join: Option<u64>,
    /// When the last request that found the visitor still waiting was sent: the grant came
    /// after this moment.
    pub last_waiting_sent_us: Option<u64>,
    /// When the answer that admitted the visitor arrived: the grant came before it.
    pub admitted_us: Option<u64>,
    pub admission: Admission,
    pub polls: u32,
    /// When the visitor stepped away (stopped polling) and came back, if it did.
    pub away_from_us: Option<u64>,
    pub back_us: Option<u64>,
    /// Polls whose `ahead` was larger than the poll before (usher promises it never grows).
    pub position_increases: u32,
    pub connects: u32,
    pub failures: Vec<(Route, Failure)>,
    pub samples: Vec<Sample>,
}

impl VisitorRecord {
    pub fn new(index: u64) -> Self {
        Self {
            index,
            join_sent_us: None,
            join_answered_us: None,
            ticket: None,
            prequeued: false,
            eta_at_join_s: None,
            ahead_at_join: None,
            last_waiting_sent_us: None,
            admitted_us: None,
            admission: Admission::No,
            polls: 0,
            away_from_us: None,
            back_us: None,
            position_increases: 0,
            connects: 0,
            failures: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// Queued with a ticket (whether or not admitted later).
    pub fn queued(&self) -> bool {
        self.ticket.is_some() || self.admission == Admission::FromLine
    }
}
