//! Every word a visitor reads, in Danish and English, and how the language is chosen: the
//! visitor's own choice (the `usher_lang` cookie set by the switch on the page) first, then
//! `Accept-Language`. One [`Strings`] per language, so a translator edits one place.

use http::header::{ACCEPT_LANGUAGE, COOKIE, HeaderMap};
use serde::Serialize;

/// The cookie that remembers the visitor's language choice.
pub const LANG_COOKIE: &str = "usher_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Da,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Da => "da",
            Lang::En => "en",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "da" => Some(Lang::Da),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language the switch on the page offers.
    pub fn other(self) -> Self {
        match self {
            Lang::Da => Lang::En,
            Lang::En => Lang::Da,
        }
    }

    pub fn strings(self) -> &'static Strings {
        match self {
            Lang::Da => &DA,
            Lang::En => &EN,
        }
    }

    /// The visitor's choice (cookie), else the best of `Accept-Language`, else English (a
    /// visitor whose browser asks for neither language reads English more likely than Danish).
    pub fn for_request(headers: &HeaderMap) -> Self {
        Self::from_cookie(headers).or_else(|| Self::from_accept_language(headers)).unwrap_or(Lang::En)
    }

    fn from_cookie(headers: &HeaderMap) -> Option<Self> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|t| t.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == LANG_COOKIE)
            .and_then(|(_, value)| Self::parse(value))
    }

    /// The language with the highest quality among those we have (RFC 9110 §12.5.4); on a tie
    /// the first listed wins. `da-DK` counts as `da`, `*` as neither.
    pub fn from_accept_language(headers: &HeaderMap) -> Option<Self> {
        let mut best: Option<(u16, Lang)> = None;
        for value in headers.get_all(ACCEPT_LANGUAGE).iter().filter_map(|v| v.to_str().ok()) {
            for item in value.split(',') {
                let mut parts = item.split(';');
                let tag = parts.next().unwrap_or_default().trim();
                let primary = tag.split('-').next().unwrap_or_default();
                let lang = match primary {
                    p if p.eq_ignore_ascii_case("da") => Lang::Da,
                    p if p.eq_ignore_ascii_case("en") => Lang::En,
                    _ => continue,
                };
                let quality = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                let quality = (quality.clamp(0.0, 1.0) * 1000.0) as u16;
                if quality > 0 && best.is_none_or(|(q, _)| quality > q) {
                    best = Some((quality, lang));
                }
            }
        }
        best.map(|(_, lang)| lang)
    }

    /// "about 12 minutes": rounded, never falsely precise.
    pub fn eta_text(self, seconds: u64) -> String {
        let s = self.strings();
        match seconds {
            0..60 => s.eta_under_minute.into(),
            60..5400 => {
                let minutes = seconds.div_ceil(60);
                if minutes == 1 { s.eta_minute.into() } else { s.eta_minutes.replace("{n}", &minutes.to_string()) }
            }
            _ => s.eta_hours.replace("{n}", &((seconds + 1800) / 3600).to_string()),
        }
    }

    /// "between 10 and 15 minutes", while the outflow moves; `None` when the range rounds to
    /// one figure (the single estimate is shown then).
    pub fn eta_range_text(self, low: u64, high: u64) -> Option<String> {
        let s = self.strings();
        let (a, b, template) = if high < 5400 {
            (low.div_ceil(60).max(1), high.div_ceil(60), s.eta_range_minutes)
        } else {
            (((low + 1800) / 3600).max(1), (high + 1800) / 3600, s.eta_range_hours)
        };
        (a < b).then(|| template.replace("{a}", &a.to_string()).replace("{b}", &b.to_string()))
    }

    /// How long ago the visitor joined, in whole minutes.
    pub fn ago_text(self, seconds: u64) -> String {
        let s = self.strings();
        match seconds / 60 {
            0 => s.ago_under_minute.into(),
            1 => s.ago_minute.into(),
            n => s.ago_minutes.replace("{n}", &n.to_string()),
        }
    }

    /// How long a place is held ("10 minutes"): a promise, so never rounded up.
    pub fn hold_text(self, seconds: u64) -> String {
        let s = self.strings();
        let n = |text: &str, n: u64| text.replace("{n}", &n.to_string());
        match seconds {
            0..60 => n(s.hold_seconds, seconds),
            60..120 => s.hold_minute.into(),
            s_ if s_ >= 3600 && s_ % 3600 == 0 => {
                if s_ == 3600 {
                    s.hold_hour.into()
                } else {
                    n(s.hold_hours, s_ / 3600)
                }
            }
            _ => n(s.hold_minutes, seconds / 60),
        }
    }

    /// The sentence that says how long the place is kept while the visitor is away.
    pub fn keep_open_text(self, hold_seconds: u64) -> String {
        self.strings().keep_open_held.replace("{d}", &self.hold_text(hold_seconds))
    }

    /// A countdown, exact to the second ("1 h 4 min 12 s"): the opening time is a fact, not
    /// an estimate.
    pub fn countdown_text(self, seconds: u64) -> String {
        let s = self.strings();
        let (h, m, sec) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h} {} ", s.unit_hour));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m} {} ", s.unit_minute));
        }
        out.push_str(&format!("{sec} {}", s.unit_second));
        out
    }
}

/// One language's words. `{n}` is replaced by a number, `{t}` by a time.
#[derive(Debug, Serialize)]
pub struct Strings {
    /// The language's own name, shown on the switch that offers it.
    pub language_name: &'static str,
    pub switch_label: &'static str,
    pub title_waiting: &'static str,
    pub lead_waiting: &'static str,
    pub title_prequeue: &'static str,
    pub lead_prequeue: &'static str,
    pub title_paused: &'static str,
    pub lead_paused: &'static str,
    pub title_admitted: &'static str,
    pub lead_admitted: &'static str,
    pub title_closed: &'static str,
    pub lead_closed: &'static str,
    pub title_unavailable: &'static str,
    pub lead_unavailable: &'static str,
    pub title_rate_limited: &'static str,
    pub lead_rate_limited: &'static str,
    pub title_moment: &'static str,
    pub lead_moment: &'static str,
    pub operator_message: &'static str,
    pub ahead_label: &'static str,
    pub position_unknown: &'static str,
    pub eta_label: &'static str,
    pub eta_unknown: &'static str,
    pub eta_paused: &'static str,
    pub eta_under_minute: &'static str,
    pub eta_minute: &'static str,
    pub eta_minutes: &'static str,
    pub eta_hours: &'static str,
    pub eta_range_minutes: &'static str,
    pub eta_range_hours: &'static str,
    pub progress_label: &'static str,
    pub joined_label: &'static str,
    pub joined_at: &'static str,
    pub ago_under_minute: &'static str,
    pub ago_minute: &'static str,
    pub ago_minutes: &'static str,
    pub opens_label: &'static str,
    pub opens_now: &'static str,
    pub drawn_at_opening: &'static str,
    /// The waiter's ticket number, and the link to the room's checkable draw.
    pub ticket_label: &'static str,
    pub draw_link: &'static str,
    /// A newcomer's proof of work: the heading and lead, the progress bar's label, what the
    /// status region says as it starts, when it is done and if it must start again, and
    /// (`{n}`: seconds) what a page without JavaScript says.
    pub title_challenge: &'static str,
    pub lead_challenge: &'static str,
    pub challenge_label: &'static str,
    pub challenge_working: &'static str,
    pub challenge_done: &'static str,
    pub challenge_retry: &'static str,
    pub challenge_noscript: &'static str,
    pub unit_hour: &'static str,
    pub unit_minute: &'static str,
    pub unit_second: &'static str,
    pub reassurance: &'static str,
    pub keep_open: &'static str,
    /// `keep_open` with how long the place is held (`{d}`, e.g. "10 minutes").
    pub keep_open_held: &'static str,
    pub hold_seconds: &'static str,
    pub hold_minute: &'static str,
    pub hold_minutes: &'static str,
    pub hold_hour: &'static str,
    pub hold_hours: &'static str,
    pub offline: &'static str,
    pub retry_label: &'static str,
}

pub static EN: Strings = Strings {
    language_name: "English",
    switch_label: "Read this page in English",
    title_waiting: "You are in the queue",
    lead_waiting: "Many people are using the service right now, so visitors are let in one by one.",
    title_prequeue: "You are in the queue",
    lead_prequeue: "The service opens soon. Everyone who is here before it opens gets a fair, random place in the queue.",
    title_paused: "The queue is paused",
    lead_paused: "Admission is paused for a moment. You keep your place.",
    title_admitted: "It is your turn",
    lead_admitted: "Taking you to the service now…",
    title_closed: "Closed for maintenance",
    lead_closed: "The service is closed for maintenance. Please come back later.",
    title_unavailable: "Temporarily unavailable",
    lead_unavailable: "The queue cannot be reached just now. This page tries again by itself; you keep your place.",
    title_rate_limited: "Too many requests",
    lead_rate_limited: "Too many requests came from your connection. This page tries again by itself in a moment.",
    title_moment: "One moment",
    lead_moment: "Taking you on…",
    operator_message: "Message from the service",
    ahead_label: "People ahead of you",
    position_unknown: "not known yet",
    eta_label: "Estimated wait",
    eta_unknown: "not known yet",
    eta_paused: "paused",
    eta_under_minute: "less than a minute",
    eta_minute: "about a minute",
    eta_minutes: "about {n} minutes",
    eta_hours: "about {n} hours",
    eta_range_minutes: "between {a} and {b} minutes",
    eta_range_hours: "between {a} and {b} hours",
    progress_label: "Progress in the queue",
    joined_label: "You joined",
    joined_at: "at {t}",
    ago_under_minute: "less than a minute ago",
    ago_minute: "a minute ago",
    ago_minutes: "{n} minutes ago",
    opens_label: "The queue opens in",
    opens_now: "now",
    drawn_at_opening: "Your place in the queue is drawn when it opens; until then no position is shown.",
    ticket_label: "Your ticket number",
    draw_link: "How the order is drawn, and how anyone can check it",
    title_challenge: "One moment",
    lead_challenge: "Your browser is doing a short calculation that keeps automated programs out of the queue. You do not need to do anything.",
    challenge_label: "Calculation",
    challenge_working: "Calculating… This usually takes a second or two.",
    challenge_done: "Done. Taking you to the queue…",
    challenge_retry: "That did not work. Trying again…",
    challenge_noscript: "Without JavaScript this takes about {n} seconds instead. The page moves on by itself.",
    unit_hour: "h",
    unit_minute: "min",
    unit_second: "s",
    reassurance: "You keep your place. There is no need to refresh this page: you will be let in automatically when it is your turn.",
    keep_open: "Keep this page open. If you close it, you can come back within a short while and keep your place.",
    keep_open_held: "You can lock your phone or use another app meanwhile: your place is held for {d} after this page last checked in. Come back to this page within that time and you keep your place; if your turn came while you were away, you are let in when you return.",
    hold_seconds: "{n} seconds",
    hold_minute: "1 minute",
    hold_minutes: "{n} minutes",
    hold_hour: "1 hour",
    hold_hours: "{n} hours",
    offline: "The connection was lost. Trying again; you keep your place.",
    retry_label: "Try again",
};

pub static DA: Strings = Strings {
    language_name: "Dansk",
    switch_label: "Læs denne side på dansk",
    title_waiting: "Du er i kø",
    lead_waiting: "Mange bruger tjenesten lige nu, så der lukkes ind én ad gangen.",
    title_prequeue: "Du er i kø",
    lead_prequeue: "Tjenesten åbner snart. Alle, der er her, før den åbner, får en retfærdig, tilfældig plads i køen.",
    title_paused: "Køen er sat på pause",
    lead_paused: "Der lukkes ikke ind lige nu. Du beholder din plads.",
    title_admitted: "Det er din tur",
    lead_admitted: "Du sendes videre til tjenesten nu…",
    title_closed: "Lukket på grund af vedligeholdelse",
    lead_closed: "Tjenesten er lukket på grund af vedligeholdelse. Prøv igen senere.",
    title_unavailable: "Midlertidigt utilgængelig",
    lead_unavailable: "Køen kan ikke nås lige nu. Siden prøver selv igen, og du beholder din plads.",
    title_rate_limited: "For mange forespørgsler",
    lead_rate_limited: "Der er kommet for mange forespørgsler fra din forbindelse. Siden prøver selv igen om et øjeblik.",
    title_moment: "Et øjeblik",
    lead_moment: "Du sendes videre…",
    operator_message: "Besked fra tjenesten",
    ahead_label: "Personer foran dig",
    position_unknown: "endnu ukendt",
    eta_label: "Forventet ventetid",
    eta_unknown: "endnu ukendt",
    eta_paused: "på pause",
    eta_under_minute: "under et minut",
    eta_minute: "omkring et minut",
    eta_minutes: "omkring {n} minutter",
    eta_hours: "omkring {n} timer",
    eta_range_minutes: "mellem {a} og {b} minutter",
    eta_range_hours: "mellem {a} og {b} timer",
    progress_label: "Fremgang i køen",
    joined_label: "Du stillede dig i kø",
    joined_at: "kl. {t}",
    ago_under_minute: "for under et minut siden",
    ago_minute: "for et minut siden",
    ago_minutes: "for {n} minutter siden",
    opens_label: "Køen åbner om",
    opens_now: "nu",
    drawn_at_opening: "Der trækkes lod om pladserne i køen, når den åbner; indtil da vises ingen placering.",
    ticket_label: "Dit billetnummer",
    draw_link: "Sådan trækkes rækkefølgen, og sådan kan alle kontrollere den",
    title_challenge: "Et øjeblik",
    lead_challenge: "Din browser laver en kort beregning, der holder automatiske programmer ude af køen. Du skal ikke gøre noget.",
    challenge_label: "Beregning",
    challenge_working: "Beregner… Det tager som regel et sekund eller to.",
    challenge_done: "Færdig. Du kommer nu i køen…",
    challenge_retry: "Det lykkedes ikke. Prøver igen…",
    challenge_noscript: "Uden JavaScript tager det i stedet omkring {n} sekunder. Siden går selv videre.",
    unit_hour: "t",
    unit_minute: "min.",
    unit_second: "sek.",
    reassurance: "Du beholder din plads. Du behøver ikke at opdatere siden: du lukkes automatisk ind, når det er din tur.",
    keep_open: "Hold siden åben. Lukker du den, kan du komme tilbage inden for kort tid og beholde din plads.",
    keep_open_held: "Du kan låse telefonen eller bruge en anden app imens: din plads holdes i {d}, efter at siden sidst har tjekket ind. Kommer du tilbage til siden inden da, beholder du din plads, og er det blevet din tur, mens du var væk, lukkes du ind, når du vender tilbage.",
    hold_seconds: "{n} sekunder",
    hold_minute: "1 minut",
    hold_minutes: "{n} minutter",
    hold_hour: "1 time",
    hold_hours: "{n} timer",
    offline: "Forbindelsen blev afbrudt. Vi prøver igen, og du beholder din plads.",
    retry_label: "Prøv igen",
};

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(value: &'static str) -> Option<Lang> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_LANGUAGE, HeaderValue::from_static(value));
        Lang::from_accept_language(&h)
    }

    #[test]
    fn accept_language_by_quality() {
        assert_eq!(accept("da-DK,da;q=0.9,en;q=0.8"), Some(Lang::Da));
        assert_eq!(accept("en-GB, da;q=0.5"), Some(Lang::En));
        assert_eq!(accept("fr, da;q=0.3, en;q=0.7"), Some(Lang::En));
        assert_eq!(accept("de, fr"), None);
        assert_eq!(accept("da;q=0, en;q=0.1"), Some(Lang::En));
        assert_eq!(accept("*"), None);
        assert_eq!(accept("DA"), Some(Lang::Da));
    }

    #[test]
    fn the_cookie_choice_wins_over_the_browser() {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("da"));
        h.insert(COOKIE, HeaderValue::from_static("a=1; usher_lang=en"));
        assert_eq!(Lang::for_request(&h), Lang::En);
        h.insert(COOKIE, HeaderValue::from_static("usher_lang=xx"));
        assert_eq!(Lang::for_request(&h), Lang::Da);
    }

    #[test]
    fn estimates_are_rounded_not_precise() {
        assert_eq!(Lang::En.eta_text(20), "less than a minute");
        assert_eq!(Lang::En.eta_text(61), "about 2 minutes");
        assert_eq!(Lang::En.eta_text(720), "about 12 minutes");
        assert_eq!(Lang::Da.eta_text(720), "omkring 12 minutter");
        assert_eq!(Lang::En.eta_text(4 * 3600), "about 4 hours");
        assert_eq!(Lang::En.eta_range_text(600, 900).as_deref(), Some("between 10 and 15 minutes"));
        assert_eq!(Lang::Da.eta_range_text(600, 900).as_deref(), Some("mellem 10 og 15 minutter"));
        assert_eq!(Lang::En.eta_range_text(3 * 3600, 5 * 3600).as_deref(), Some("between 3 and 5 hours"));
        assert_eq!(Lang::En.eta_range_text(20, 50), None, "both under a minute: one figure");
        assert_eq!(Lang::En.eta_range_text(601, 610), None, "rounds to one figure");
    }

    #[test]
    fn the_hold_is_said_in_words_and_never_rounded_up() {
        assert_eq!(Lang::En.hold_text(600), "10 minutes");
        assert_eq!(Lang::Da.hold_text(600), "10 minutter");
        assert_eq!(Lang::En.hold_text(90), "1 minute");
        assert_eq!(Lang::En.hold_text(45), "45 seconds");
        assert_eq!(Lang::Da.hold_text(7200), "2 timer");
        assert_eq!(Lang::En.hold_text(3600), "1 hour");
        assert_eq!(Lang::En.hold_text(5400), "90 minutes");
        assert!(Lang::Da.keep_open_text(600).contains("holdes i 10 minutter"));
        assert!(Lang::En.keep_open_text(300).contains("held for 5 minutes"));
    }

    #[test]
    fn countdowns_are_exact() {
        assert_eq!(Lang::En.countdown_text(3723), "1 h 2 min 3 s");
        assert_eq!(Lang::Da.countdown_text(59), "59 sek.");
        assert_eq!(Lang::Da.countdown_text(60), "1 min. 0 sek.");
    }
}
