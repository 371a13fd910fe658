//! Named operators with roles (the data processor agreement's "individual access on least
//! privilege, revoked when no longer needed", and "the identity and the actions of users are
//! logged").
//!
//! Each operator is `[[admin.operator]]` with a name, a role and a token that usher keeps only
//! as its SHA-256: a leaked configuration file or a heap dump gives nobody a token. Tokens are
//! high-entropy (256 random bits from `usher admin token new`), so a plain SHA-256 is as good
//! as a slow password hash here, and checking one costs a microsecond. A reload swaps the whole
//! list, so a revoked token is refused from the next request on.

use std::fmt;

/// What an operator may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads the rooms' figures (and `/metrics` when `admin.metrics = "viewer"`).
    Viewer,
    /// Pauses, resumes, drains and changes a room's limits.
    Operator,
    /// Everything, including the list of operators.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One person (or one service, such as Prometheus) with access to the admin listener.
#[derive(Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    /// The SHA-256 of the token; the token itself is never kept.
    pub token_sha256: [u8; 32],
}

impl Operator {
    /// `USHER_ADMIN_TOKEN` (or `admin.token_file`) as an admin named [`SHORTCUT_NAME`].
    pub fn shortcut(token: &str) -> Self {
        Self { name: SHORTCUT_NAME.into(), role: Role::Admin, token_sha256: token_sha256(token) }
    }

    /// The first 8 hex digits of the token's hash: enough to tell tokens apart in a review,
    /// useless for guessing one.
    pub fn token_id(&self) -> String {
        hex(&self.token_sha256[..4])
    }
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token_id", &self.token_id())
            .finish()
    }
}

/// The name under which `USHER_ADMIN_TOKEN` (or `admin.token_file`) acts: the single-admin
/// shortcut for small set-ups and the demo. No `[[admin.operator]]` may take it.
pub const SHORTCUT_NAME: &str = "admin-token";

/// Whether `name` can be an operator's name: it is logged and printed into TOML, so it is
/// kept to letters, digits and `.`, `_`, `-`, `@`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Everyone who may use the admin listener right now.
#[derive(Debug, Default)]
pub struct Operators {
    list: Vec<Operator>,
}

impl Operators {
    /// The configured operators, and the shortcut token's admin when one is set.
    pub fn new(configured: &[Operator], shortcut: Option<&Operator>) -> Self {
        Self { list: configured.iter().chain(shortcut).cloned().collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn all(&self) -> &[Operator] {
        &self.list
    }

    /// The operator whose token this is. Every entry is compared, in constant time, so the
    /// answer's timing says nothing about which entry (if any) came close. The first match
    /// wins: were `USHER_ADMIN_TOKEN` set to a named operator's token (the configuration check
    /// cannot see the environment), that operator keeps their own role, not the admin's.
    pub fn identify(&self, token: &str) -> Option<&Operator> {
        let presented = token_sha256(token);
        let mut found = None;
        for operator in &self.list {
            if crate::room::tokens::constant_time_eq(&presented, &operator.token_sha256) && found.is_none() {
                found = Some(operator);
            }
        }
        found
    }
}

/// The SHA-256 of a token.
pub fn token_sha256(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Parses 64 hex digits.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Lowercase hex of `bytes` (token hashes, the draw's seeds and commitments, node ids).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A fresh token: 32 random bytes, base64url without padding (43 characters, safe in a
/// header and a shell).
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What `usher admin token new NAME` prints: the token once, and the lines to paste.
pub fn new_operator_text(name: &str, role: Role, token: &str) -> String {
    format!(
        "New token for {name} (hand it over privately; usher stores only its SHA-256, so it cannot be shown again):\n\n    \
         {token}\n\nAdd these lines to the configuration file, then reload (systemctl reload usher, or kill -HUP):\n\n\
         [[admin.operator]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n",
        hex(&token_sha256(token))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(name: &str, role: Role, token: &str) -> Operator {
        Operator { name: name.into(), role, token_sha256: token_sha256(token) }
    }

    #[test]
    fn a_token_identifies_its_operator_and_nothing_else_does() {
        let operators = Operators::new(
            &[operator("anne", Role::Viewer, "anne-token"), operator("bo", Role::Operator, "bo-token")],
            Some(&Operator::shortcut("shortcut")),
        );
        assert_eq!(operators.identify("bo-token").map(|o| (o.name.as_str(), o.role)), Some(("bo", Role::Operator)));
        assert_eq!(
            operators.identify("shortcut").map(|o| (o.name.as_str(), o.role)),
            Some((SHORTCUT_NAME, Role::Admin))
        );
        // The shortcut set to a named operator's token grants that operator's role only.
        let same = Operators::new(&[operator("bo", Role::Viewer, "bo-token")], Some(&Operator::shortcut("bo-token")));
        assert_eq!(same.identify("bo-token").map(|o| o.role), Some(Role::Viewer));
        for wrong in ["", "anne-token ", "bo-toke", "ANNE-TOKEN"] {
            assert!(operators.identify(wrong).is_none(), "{wrong:?} identified someone");
        }
    }

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn a_new_token_is_long_random_and_its_printed_hash_parses_back() {
        let (a, b) = (new_token().expect("random"), new_token().expect("random"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        let text = new_operator_text("anne", Role::Operator, &a);
        let line = text.lines().find_map(|l| l.strip_prefix("token_sha256 = \"")).expect("hash line");
        assert_eq!(parse_sha256(line.trim_end_matches('"')), Some(token_sha256(&a)));
        let config: toml::Value =
            toml::from_str(&text[text.find("[[admin.operator]]").expect("block")..]).expect("TOML");
        assert_eq!(config["admin"]["operator"][0]["role"].as_str(), Some("operator"));
    }

    #[test]
    fn the_debug_form_shows_no_hash() {
        let text = format!("{:?}", operator("anne", Role::Admin, "secret-token"));
        assert!(!text.contains(&hex(&token_sha256("secret-token"))), "{text}");
        assert!(text.contains("anne"));
    }

    #[test]
    fn names_are_kept_printable() {
        assert!(valid_name("anne.berg@ops-1"));
        for bad in ["", "a b", "anne\"", "x\n", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
