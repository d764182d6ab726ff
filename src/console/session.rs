//! The console's login: the admin token, typed once into a form, becomes a
//! signed session cookie (HttpOnly, SameSite=Strict, path `/console`), and
//! every form that acts carries a CSRF token bound to that session.
//!
//! Sessions are stateless: the cookie holds its expiry and a random nonce,
//! signed with a key derived from `ADMIN_TOKEN`. Any serve replica accepts
//! another's cookie, and rotating `ADMIN_TOKEN` ends every session at once.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The cookie's name.
pub const COOKIE: &str = "stripe_sync_console";
/// How long a login lasts.
pub const LIFETIME: Duration = Duration::hours(12);

/// Signs and checks sessions with a key derived from the admin token.
#[derive(Clone)]
pub struct Sessions {
    admin_token: std::sync::Arc<SecretString>,
}

/// A checked session: what a page needs to render forms that act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    nonce: String,
    pub expires_at: DateTime<Utc>,
    /// The value every acting form sends back as `csrf`.
    pub csrf: String,
}

impl Sessions {
    pub fn new(admin_token: std::sync::Arc<SecretString>) -> Self {
        Self { admin_token }
    }

    /// Whether `presented` is the admin token (constant time).
    pub fn is_admin_token(&self, presented: &str) -> bool {
        crate::http::auth::token_matches(presented, self.admin_token.expose_secret())
    }

    /// A new session's cookie value, valid until `now + LIFETIME`.
    pub fn issue(&self, now: DateTime<Utc>) -> String {
        let expires = (now + LIFETIME).timestamp();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let signed = format!("{expires}.{nonce}");
        let mac = hex::encode(self.mac(&["session", &signed]));
        format!("{signed}.{mac}")
    }

    /// The session a cookie value names, if it is ours and not expired.
    pub fn check(&self, cookie: &str, now: DateTime<Utc>) -> Option<Session> {
        let (signed, mac) = cookie.rsplit_once('.')?;
        let (expires, nonce) = signed.split_once('.')?;
        let mac = hex::decode(mac).ok()?;
        self.verifier(&["session", signed])
            .verify_slice(&mac)
            .ok()?;
        let expires_at = DateTime::from_timestamp(expires.parse().ok()?, 0)?;
        if expires_at <= now {
            return None;
        }
        Some(Session {
            csrf: hex::encode(self.mac(&["csrf", nonce])),
            nonce: nonce.to_owned(),
            expires_at,
        })
    }

    /// Whether `presented` is the CSRF token of `session` (constant time).
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        let Ok(presented) = hex::decode(presented) else {
            return false;
        };
        self.verifier(&["csrf", &session.nonce])
            .verify_slice(&presented)
            .is_ok()
    }

    fn verifier(&self, parts: &[&str]) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(self.admin_token.expose_secret().as_bytes())
            .expect("any key length");
        // The purpose and each part are length-prefixed, so no two
        // different lists sign the same bytes.
        for part in std::iter::once(&"stripe-sync console").chain(parts) {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part.as_bytes());
        }
        m
    }

    fn mac(&self, parts: &[&str]) -> Vec<u8> {
        self.verifier(parts).finalize().into_bytes().to_vec()
    }
}

/// The `Set-Cookie` value for a session. `Secure` unless the console is
/// reached on a loopback host (an SSH tunnel, a local run) without a proxy
/// saying the browser came over HTTPS: there is no TLS there to require.
pub fn set_cookie(value: &str, host: Option<&str>, forwarded_proto: Option<&str>) -> String {
    let behind_tls = forwarded_proto.is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let secure = if is_loopback(host) && !behind_tls {
        ""
    } else {
        "; Secure"
    };
    format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME.num_seconds()
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session cookie's value in a `Cookie` header.
pub fn from_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn is_loopback(host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(token: &str) -> Sessions {
        Sessions::new(std::sync::Arc::new(SecretString::from(token.to_owned())))
    }

    #[test]
    fn a_session_holds_until_it_expires_and_only_under_its_token() {
        let s = sessions("admin-token-0123456789");
        let now = Utc::now();
        let cookie = s.issue(now);
        let session = s.check(&cookie, now).expect("fresh");
        assert!(s.check(&cookie, now + LIFETIME).is_none(), "expired");
        assert!(sessions("another-token-0123456789")
            .check(&cookie, now)
            .is_none());
        // A changed expiry breaks the signature.
        let (expires, rest) = cookie.split_once('.').unwrap();
        let later: i64 = expires.parse::<i64>().unwrap() + 3600;
        assert!(s.check(&format!("{later}.{rest}"), now).is_none());
        assert!(s.check("garbage", now).is_none());
        assert!(s.check("1.2.zz", now).is_none());
        assert!(s.csrf_matches(&session, &session.csrf));
        assert!(!s.csrf_matches(&session, ""));
        // Another session's CSRF token is not this one's.
        let other = s.check(&s.issue(now), now).unwrap();
        assert!(!s.csrf_matches(&session, &other.csrf));
    }

    #[test]
    fn the_cookie_is_secure_except_on_loopback() {
        assert!(set_cookie("v", Some("console.example.com"), None).ends_with("; Secure"));
        assert!(set_cookie("v", None, None).ends_with("; Secure"));
        for host in ["127.0.0.1:8080", "localhost", "[::1]:80", "localhost:3000"] {
            assert!(
                !set_cookie("v", Some(host), None).contains("Secure"),
                "{host}"
            );
        }
        // A TLS proxy that passes on its upstream's loopback Host.
        assert!(set_cookie("v", Some("127.0.0.1:8080"), Some("https")).ends_with("; Secure"));
        let c = set_cookie("v", Some("localhost"), None);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/console")
        );
        assert_eq!(
            from_header("a=b; stripe_sync_console=xyz; c=d"),
            Some("xyz")
        );
        assert_eq!(from_header("a=b"), None);
    }
}
