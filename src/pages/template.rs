//! Queue page templates (minijinja): the built-in page and an operator's own, both rendered
//! from the same [`PageContext`] (the documented variables, see README "Queue page").
//!
//! An operator's template is compiled *and rendered in every state and language* when the
//! configuration is loaded, with undefined variables as errors, so that a typo or a broken
//! tag stops `usher check-config` and start-up instead of failing at peak. Should a render
//! still fail at run time, the built-in page is served instead: never a 500.

use super::i18n::{Lang, Strings};
use super::{Status, View};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The built-in page, embedded in the binary.
pub const BUILT_IN: &str = include_str!("queue.html");

/// Template files larger than this are refused (the whole page should be < 20 KB).
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

const NAME: &str = "page";

/// Why a template cannot be used; the config error names the key and shows this.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is {size} bytes; at most {MAX_TEMPLATE_BYTES} are allowed")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// A compiled page template.
pub struct PageTemplate {
    env: Environment<'static>,
    /// Where it came from, for logs; `None` for the built-in page.
    pub path: Option<PathBuf>,
}

impl std::fmt::Debug for PageTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTemplate").field("path", &self.path).finish_non_exhaustive()
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut text = match e.line() {
        Some(line) => format!("line {line}: {e}"),
        None => e.to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

impl PageTemplate {
    /// Compiles `source` without checking renders (the built-in page is checked by tests).
    fn compile(source: String, path: Option<PathBuf>) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Everything is HTML, whatever the file is called: operator messages are escaped.
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.add_template_owned(NAME, source).map_err(|e| describe(&e))?;
        Ok(Self { env, path })
    }

    /// Reads, compiles and test-renders an operator's template file.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let meta = std::fs::metadata(path).map_err(|source| TemplateError::Read { path: path.into(), source })?;
        if meta.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::TooLarge { path: path.into(), size: meta.len() });
        }
        let source =
            std::fs::read_to_string(path).map_err(|source| TemplateError::Read { path: path.into(), source })?;
        let invalid = |detail| TemplateError::Invalid { path: path.into(), detail };
        let template = Self::compile(source, Some(path.into())).map_err(invalid)?;
        template.check().map_err(invalid)?;
        Ok(template)
    }

    /// The built-in page, compiled once.
    pub fn built_in() -> &'static PageTemplate {
        static BUILT: OnceLock<PageTemplate> = OnceLock::new();
        BUILT.get_or_init(|| match Self::compile(BUILT_IN.to_string(), None) {
            Ok(t) => t,
            // The built-in page is part of the binary and covered by tests.
            Err(e) => panic!("the built-in queue page does not compile: {e}"),
        })
    }

    pub fn render(&self, context: &PageContext) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| describe(&e))?;
        template.render(context).map_err(|e| describe(&e))
    }

    /// Renders every state in every language with sample values, so that errors that only
    /// show when rendering (an unknown variable or filter) surface now.
    pub fn check(&self) -> Result<(), String> {
        for view in View::samples() {
            for lang in [Lang::Da, Lang::En] {
                self.render(&PageContext::new(&view, lang))
                    .map_err(|e| format!("rendering the {:?} state ({}): {e}", view.status, lang.code()))?;
            }
        }
        Ok(())
    }
}

/// A room's page: the operator's template, or the built-in one.
#[derive(Debug, Clone, Default)]
pub struct RoomPage(Option<Arc<PageTemplate>>);

impl RoomPage {
    pub fn custom(template: Arc<PageTemplate>) -> Self {
        Self(Some(template))
    }

    /// The page HTML; a custom template that fails falls back to the built-in page.
    pub fn render(&self, context: &PageContext) -> String {
        if let Some(custom) = &self.0 {
            match custom.render(context) {
                Ok(html) => return html,
                Err(e) => {
                    tracing::warn!(template = ?custom.path, error = %e, "custom queue page failed; built-in page served")
                }
            }
        }
        PageTemplate::built_in().render(context).unwrap_or_else(|e| {
            tracing::error!(error = %e, "built-in queue page failed");
            String::from("<!doctype html><title>Queue</title><p>Please wait and reload this page.</p>")
        })
    }
}

/// The language switch: a link to `/.usher/lang`, which sets the choice and returns here.
#[derive(Debug, Serialize)]
pub struct Switch {
    pub lang: &'static str,
    pub name: &'static str,
    pub label: &'static str,
    pub url: String,
}

/// The variables a page template sees (documented in README "Queue page").
#[derive(Debug, Serialize)]
pub struct PageContext<'a> {
    pub lang: &'static str,
    pub status: Status,
    pub room: &'a str,
    pub title: &'static str,
    pub lead: &'static str,
    pub message: Option<&'a str>,
    pub ahead: Option<u64>,
    pub position: Option<u64>,
    pub eta_seconds: Option<u64>,
    pub eta_text: String,
    pub progress_percent: Option<u8>,
    pub poll_after_seconds: u64,
    /// How long the place is held after the page last checked in, in seconds and words,
    /// and the sentence that says so ("keep this page open…").
    pub hold_seconds: u64,
    pub hold_text: String,
    pub keep_open_text: String,
    pub joined_at: Option<u64>,
    pub joined_iso: Option<String>,
    pub joined_ago: Option<String>,
    pub opens_at: Option<u64>,
    pub opens_iso: Option<String>,
    pub opens_in_seconds: Option<u64>,
    pub opens_in_text: Option<String>,
    pub retry_after_seconds: u64,
    pub server_time: u64,
    pub ticket: Option<u64>,
    pub draw_url: Option<String>,
    /// Status `challenge`: what the page's worker computes, where the page without
    /// JavaScript goes after `poll_after_seconds`, and the sentence that says so.
    pub challenge: Option<&'a crate::room::challenge::Issued>,
    pub noscript_url: Option<&'a str>,
    pub challenge_noscript_text: Option<String>,
    pub switch: Switch,
    pub css_url: &'static str,
    pub js_url: &'static str,
    /// Every string of the page's language, for templates that reuse the translations.
    pub t: &'static Strings,
}

impl<'a> PageContext<'a> {
    pub fn new(view: &'a View, lang: Lang) -> Self {
        let t = lang.strings();
        let (title, lead) = match view.status {
            Status::Waiting => (t.title_waiting, t.lead_waiting),
            Status::Prequeue => (t.title_prequeue, t.lead_prequeue),
            Status::Paused => (t.title_paused, t.lead_paused),
            Status::Admitted => (t.title_admitted, t.lead_admitted),
            Status::Closed => (t.title_closed, t.lead_closed),
            Status::Unavailable => (t.title_unavailable, t.lead_unavailable),
            Status::RateLimited => (t.title_rate_limited, t.lead_rate_limited),
            Status::Expired | Status::None => (t.title_moment, t.lead_moment),
            Status::Challenge => (t.title_challenge, t.lead_challenge),
        };
        let now = view.server_time;
        let opens_in = view.opens_at.filter(|_| view.status == Status::Prequeue).map(|at| at.saturating_sub(now));
        let other = lang.other();
        PageContext {
            lang: lang.code(),
            status: view.status,
            room: &view.room,
            title,
            lead,
            message: view.message.as_deref(),
            ahead: view.ahead,
            position: view.position(),
            eta_seconds: view.eta_seconds,
            eta_text: view.eta_text(lang),
            progress_percent: view.progress_percent(),
            poll_after_seconds: view.poll_after_seconds.max(1),
            hold_seconds: view.hold_seconds,
            hold_text: lang.hold_text(view.hold_seconds),
            keep_open_text: lang.keep_open_text(view.hold_seconds),
            joined_at: view.joined_at,
            joined_iso: view.joined_at.map(iso8601),
            joined_ago: view.joined_at.map(|at| lang.ago_text(now.saturating_sub(at))),
            opens_at: view.opens_at,
            opens_iso: view.opens_at.map(iso8601),
            opens_in_seconds: opens_in,
            opens_in_text: opens_in.map(|s| if s == 0 { t.opens_now.to_string() } else { lang.countdown_text(s) }),
            retry_after_seconds: view.poll_after_seconds.max(1),
            server_time: now,
            ticket: view.ticket,
            draw_url: view.draw_url(),
            challenge: view.challenge.as_deref(),
            noscript_url: view.challenge.as_deref().map(|c| c.noscript_url.as_str()),
            challenge_noscript_text: view
                .challenge
                .as_ref()
                .map(|c| t.challenge_noscript.replace("{n}", &c.noscript_wait_seconds.to_string())),
            switch: Switch {
                lang: other.code(),
                name: other.strings().language_name,
                label: other.strings().switch_label,
                url: format!("/.usher/lang?to={}", other.code()),
            },
            css_url: "/.usher/queue.css",
            js_url: "/.usher/queue.js",
            t,
        }
    }
}

/// Unix seconds as an ISO 8601 UTC time (for `<time datetime>`), without a date library.
pub fn iso8601(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(iso8601(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn the_built_in_page_renders_every_state() {
        PageTemplate::built_in().check().expect("built-in page renders");
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("usher-template-{}-{name}.html", std::process::id()));
        std::fs::write(&path, text).expect("write a template");
        path
    }

    #[test]
    fn a_custom_template_sees_the_documented_variables() {
        let path = write("ok", "<p>{{ t.title_waiting }} {{ position }} {{ eta_text }} {{ message }}</p>");
        let template = PageTemplate::load(&path).expect("valid template");
        let mut view = View::samples().remove(0);
        view.message = Some("<b>hi</b>".into());
        let html = RoomPage::custom(Arc::new(template)).render(&PageContext::new(&view, Lang::Da));
        assert!(html.starts_with("<p>Du er i kø 43 omkring"), "{html}");
        assert!(html.contains("&lt;b&gt;hi&lt;&#x2f;b&gt;"), "{html}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn broken_templates_are_refused_with_the_reason() {
        let syntax = write("syntax", "<p>{% if status %}</p>");
        let err = PageTemplate::load(&syntax).expect_err("unclosed block").to_string();
        assert!(err.contains("line 1") && err.contains("syntax"), "{err}");
        let typo = write("typo", "<p>{{ postion }}</p>");
        let err = PageTemplate::load(&typo).expect_err("unknown variable").to_string();
        assert!(err.contains("undefined"), "{err}");
        let err = PageTemplate::load(Path::new("/nonexistent/queue.html")).expect_err("missing").to_string();
        assert!(err.contains("cannot read"), "{err}");
        let _ = (std::fs::remove_file(syntax), std::fs::remove_file(typo));
    }
}
