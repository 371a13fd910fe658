//! The operators' console at `/admin/` on the admin listener: one page, its script and its
//! style, built in. It holds no data and needs no token to load; everything it shows comes
//! from the admin API and the event stream with the token the operator types in, kept in the
//! page's memory only. The same CSP as the queue page: nothing but usher's own files.

use crate::body::Body;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

const PAGE: &str = include_str!("console/console.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// The console's file at `path`, if it is one.
pub fn file(path: &str) -> Option<Response<Body>> {
    let (body, content_type) = match path {
        "/admin/" => (PAGE, "text/html; charset=utf-8"),
        "/admin/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/admin/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(Body::from_static(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    crate::render::security_headers(headers);
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_says_every_text_in_both_languages() {
        for line in PAGE.lines().filter(|l| l.contains("src=") || l.contains("href=")) {
            assert!(line.contains("\"/admin/console."), "a file from elsewhere: {line}");
        }
        assert!(!PAGE.contains("style=") && !PAGE.contains("<script>"), "inline style or script would break the CSP");
        // Every data-text key of the page is in both languages of the script.
        let keys: Vec<&str> = PAGE.split("data-text=\"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
        assert!(keys.len() > 20);
        let (en, da) = SCRIPT.split_once("\n  da: {").expect("both languages");
        for key in keys {
            assert!(en.contains(&format!(" {key}: ")) && da.contains(&format!(" {key}: ")), "{key} is not in both");
        }
        assert!(file("/admin/console.js").is_some() && file("/admin/other").is_none());
    }
}
