//! The audit trail (`admin.audit_file`): every admin change, refused admin request and reload
//! change as one JSON line, appended, beside the log. The log may be sampled, shipped or lost;
//! this file is what the data protection officer reads to see who changed what.
//!
//! It holds operators' names, never a token and never a client address. It is opened with
//! `O_APPEND`, so each line lands whole even if another process appends too, and reopened on
//! `SIGHUP` and `SIGUSR1`, so logrotate can move it away and usher starts a new one.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One line of the trail.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// The operator's name, `reload`, or for a refused request `unknown` (a token that is
    /// nobody's) or `-` (none).
    pub who: &'a str,
    /// `api` or `reload`.
    pub source: &'a str,
    /// `room:NAME`, `client`, `limits`, `operator:NAME`, or a refused request's path.
    pub target: &'a str,
    /// The field changed, or a refused request's method.
    pub field: &'a str,
    pub old: Option<&'a str>,
    pub new: Option<&'a str>,
    /// `applied`, or why nothing was: `refused (403)`, `failed (503)`, ...
    pub outcome: &'a str,
}

#[derive(Debug, thiserror::Error)]
#[error("admin.audit_file: cannot open {path} for appending: {source}")]
pub struct AuditError {
    path: String,
    source: std::io::Error,
}

/// The open trail, or nothing when `admin.audit_file` is not set.
#[derive(Debug, Default)]
pub struct AuditFile {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
}

impl AuditFile {
    /// Opens (creating, mode 0640) `path` for appending; an error names the key.
    pub fn open(path: Option<&Path>) -> Result<Self, AuditError> {
        let file = path.map(open_append).transpose()?;
        Ok(Self { path: path.map(Path::to_path_buf), file: Mutex::new(file) })
    }

    /// Opens the path again (after logrotate moved the file). On failure the old file stays
    /// in use and the error is logged: the trail is never silently dropped.
    pub fn reopen(&self) {
        let Some(path) = &self.path else { return };
        match open_append(path) {
            Ok(file) => *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file),
            Err(e) => tracing::error!(error = %e, "audit file not reopened; still writing to the old one"),
        }
    }

    /// Appends one line, with the time. A failed write is logged (the change itself stands).
    pub fn write(&self, entry: &Entry) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = file.as_mut() else { return };
        #[derive(Serialize)]
        struct Line<'a> {
            time: String,
            #[serde(flatten)]
            entry: &'a Entry<'a>,
        }
        let line = Line { time: rfc3339_utc(crate::clock::now_ms()), entry };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::error!(error = %e, target = entry.target, "audit file write failed");
        }
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| AuditError { path: path.display().to_string(), source })
}

/// `2026-12-03T09:00:00.123Z` from Unix milliseconds: the page's ISO 8601 time with the
/// milliseconds, since an audit line may follow another within the same second.
pub fn rfc3339_utc(ms: u64) -> String {
    let seconds = crate::pages::template::iso8601(ms / 1000);
    format!("{}.{:03}Z", seconds.trim_end_matches('Z'), ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_796_374_800_123), "2026-12-04T09:00:00.123Z");
        // Checked against the configuration's own parser, across a leap day and a year end.
        for secs in [1_709_164_800_i64, 1_735_689_599, 4_102_444_800] {
            let text = rfc3339_utc(u64::try_from(secs).expect("positive") * 1000);
            let text = text.replace(".000Z", "Z");
            assert_eq!(crate::config::parse_rfc3339(&text), Some(secs), "{text}");
        }
    }

    #[test]
    fn lines_are_appended_whole_and_a_reopen_follows_a_rotation() {
        let dir = std::env::temp_dir().join(format!("usher-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let audit = AuditFile::open(Some(&path)).expect("open");
        let entry = |outcome| Entry {
            who: "anne",
            source: "api",
            target: "room:citizens",
            field: "mode",
            old: Some("auto"),
            new: Some("paused"),
            outcome,
        };
        audit.write(&entry("applied"));
        std::fs::rename(&path, dir.join("audit.jsonl.1")).expect("rotate");
        audit.write(&entry("still the old file"));
        audit.reopen();
        audit.write(&entry("the new file"));
        let old = std::fs::read_to_string(dir.join("audit.jsonl.1")).expect("rotated file");
        let new = std::fs::read_to_string(&path).expect("new file");
        assert_eq!(old.lines().count(), 2);
        assert_eq!(new.lines().count(), 1);
        let line: serde_json::Value = serde_json::from_str(new.trim()).expect("JSON line");
        assert_eq!(line["who"], "anne");
        assert_eq!(line["outcome"], "the new file");
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_the_key() {
        let error = AuditFile::open(Some(Path::new("/nonexistent-dir/audit.jsonl"))).expect_err("no such dir");
        assert!(error.to_string().starts_with("admin.audit_file: "), "{error}");
    }
}
