//! Several unrelated platform accounts served by one deployment.
//!
//! The first platform is the one `STRIPE_API_KEY` and `STRIPE_WEBHOOK_SECRET`
//! name; its own objects keep the account `platform`, as they always have.
//! Each further one (`STRIPE_PLATFORMS`) is named by its own `acct_…` id:
//! that id is the `account` of its own objects in every key and relation,
//! so two platforms whose object ids collide never share a row. Its key
//! reads its objects and its connected accounts' ([`KeyRing`]); its
//! secrets tell its webhooks apart at ingest.

use std::collections::HashMap;
use std::sync::RwLock;

use secrecy::SecretString;

use super::account::AccountId;

/// One more platform account, as configured.
#[derive(Clone)]
pub struct Platform {
    pub account: AccountId,
    pub api_key: SecretString,
    /// Its endpoints' signing secrets; none for a platform only pulled.
    pub webhook_secrets: Vec<SecretString>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("account", &self.account)
            .field("api_key", &"[redacted]")
            .field(
                "webhook_secrets",
                &format_args!("[{} redacted]", self.webhook_secrets.len()),
            )
            .finish()
    }
}

/// Parses `STRIPE_PLATFORMS`: entries separated by `;`, each
/// `acct_…:API_KEY[:WHSEC,WHSEC…]` (Stripe's keys and secrets hold none of
/// `;`, `:` or `,`). Every account once, never `platform`, and every key set.
pub fn parse(raw: &str) -> Result<Vec<Platform>, String> {
    let mut platforms: Vec<Platform> = Vec::new();
    let entries = raw.split(';').map(str::trim).filter(|e| !e.is_empty());
    for (n, entry) in entries.enumerate() {
        let mut fields = entry.splitn(3, ':').map(str::trim);
        // The field is never shown: a key put first by mistake would go to
        // the logs.
        let account = match AccountId::parse(fields.next().unwrap_or_default()) {
            Ok(a) if !a.is_platform() => a,
            _ => {
                return Err(format!(
                "entry {} does not start with an acct_… id: each entry is acct_…:API_KEY[:WHSEC,…]",
                n + 1
            ))
            }
        };
        let api_key = match fields.next() {
            Some(key) if !key.is_empty() => SecretString::from(key.to_owned()),
            _ => {
                return Err(format!(
                    "{account} has no API key (acct_…:API_KEY[:WHSEC,…])"
                ))
            }
        };
        let webhook_secrets = fields
            .next()
            .map(crate::config::secret_list)
            .unwrap_or_default();
        if platforms.iter().any(|p| p.account == account) {
            return Err(format!("{account} is named twice"));
        }
        platforms.push(Platform {
            account,
            api_key,
            webhook_secrets,
        });
    }
    Ok(platforms)
}

/// Which key a call on an account goes with, and whether it goes on the
/// account's behalf (`Stripe-Account`). A platform's own account is called
/// with its key and no header; a connected account with its platform's key
/// and the header. A connected account is the default platform's unless
/// it was seen under another ([`KeyRing::note_connected`]).
pub struct KeyRing {
    default: SecretString,
    platforms: HashMap<AccountId, SecretString>,
    connected: RwLock<HashMap<AccountId, AccountId>>,
}

impl KeyRing {
    pub fn new(default: SecretString) -> Self {
        Self {
            default,
            platforms: HashMap::new(),
            connected: RwLock::new(HashMap::new()),
        }
    }

    pub fn with_platforms(mut self, platforms: &[Platform]) -> Self {
        for p in platforms {
            self.platforms.insert(p.account.clone(), p.api_key.clone());
        }
        self
    }

    /// These keys and `platforms`' (nothing noted yet).
    pub fn with_more(&self, platforms: &[Platform]) -> Self {
        Self {
            default: self.default.clone(),
            platforms: self.platforms.clone(),
            connected: RwLock::default(),
        }
        .with_platforms(platforms)
    }

    /// Whether `account` is a platform this process holds a key for: the
    /// default one or a configured one.
    pub fn is_platform(&self, account: &AccountId) -> bool {
        account.is_platform() || self.platforms.contains_key(account)
    }

    /// The configured platforms beside the default one.
    pub fn others(&self) -> Vec<AccountId> {
        let mut others: Vec<AccountId> = self.platforms.keys().cloned().collect();
        others.sort();
        others
    }

    /// The platform whose key reads `account`: itself for a platform.
    pub fn platform_of(&self, account: &AccountId) -> AccountId {
        if self.is_platform(account) {
            return account.clone();
        }
        self.connected
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .cloned()
            .unwrap_or(AccountId::PLATFORM)
    }

    /// Notes that `account` was seen under `platform` (an event's, a list
    /// of connected accounts'). Refused when no key is held for `platform`:
    /// the caller must not read with another platform's key, whose "no
    /// such object" would read as a deletion.
    pub fn note_connected(
        &self,
        account: &AccountId,
        platform: &AccountId,
    ) -> Result<(), UnknownPlatform> {
        if !self.is_platform(platform) {
            return Err(UnknownPlatform(platform.clone()));
        }
        if account == platform || self.is_platform(account) {
            return Ok(());
        }
        // Every event of a connected account passes here: the write lock
        // only for news.
        if self.platform_of(account) == *platform {
            return Ok(());
        }
        let mut connected = self.connected.write().unwrap_or_else(|e| e.into_inner());
        if platform.is_platform() {
            connected.remove(account);
        } else {
            connected.insert(account.clone(), platform.clone());
        }
        Ok(())
    }

    /// The key a call on `account` goes with, and the account it goes on
    /// behalf of, if any.
    pub fn route<'a>(&'a self, account: &'a AccountId) -> (SecretString, Option<&'a AccountId>) {
        if account.is_platform() {
            return (self.default.clone(), None);
        }
        if let Some(key) = self.platforms.get(account) {
            return (key.clone(), None);
        }
        let platform = self.platform_of(account);
        let key = self
            .platforms
            .get(&platform)
            .unwrap_or(&self.default)
            .clone();
        (key, Some(account))
    }
}

/// A platform this process holds no key for (`STRIPE_PLATFORMS`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform {0} is not configured here (STRIPE_PLATFORMS names no key for it)")]
pub struct UnknownPlatform(pub AccountId);

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn acct(id: &str) -> AccountId {
        AccountId::parse(id).unwrap()
    }

    #[test]
    fn entries_name_an_account_a_key_and_maybe_secrets() {
        let p = parse(" acct_B:sk_b:whsec_1, whsec_2 ; acct_C:rk_c ;").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].account, acct("acct_B"));
        assert_eq!(p[0].api_key.expose_secret(), "sk_b");
        assert_eq!(p[0].webhook_secrets.len(), 2);
        assert_eq!(p[1].webhook_secrets.len(), 0);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for (raw, says) in [
            ("platform:sk_x", "entry 1 does not start with an acct_"),
            (
                "acct_A:sk_a;cus_1:sk_x",
                "entry 2 does not start with an acct_",
            ),
            ("sk_live_secret:acct_B", "entry 1 does not"),
            ("acct_B=sk_live_secret", "entry 1 does not"),
            ("acct_B", "no API key"),
            ("acct_B:", "no API key"),
            ("acct_B:sk_1;acct_B:sk_2", "named twice"),
        ] {
            let err = parse(raw).unwrap_err();
            assert!(err.contains(says), "{raw}: {err}");
        }
        // A key never shows in the error.
        for raw in [
            "acct_B:sk_secret;acct_B:sk_secret",
            "sk_secret:acct_B",
            "acct_B=sk_secret",
        ] {
            assert!(!parse(raw).unwrap_err().contains("sk_secret"), "{raw}");
        }
    }

    #[test]
    fn each_account_goes_with_its_platforms_key() {
        let ring =
            KeyRing::new(SecretString::from("sk_a")).with_platforms(&parse("acct_B:sk_b").unwrap());
        let key = |account: &AccountId| {
            let (key, behalf) = ring.route(account);
            (
                key.expose_secret().to_owned(),
                behalf.map(|a| a.to_string()),
            )
        };
        assert_eq!(key(&AccountId::PLATFORM), ("sk_a".into(), None));
        assert_eq!(key(&acct("acct_B")), ("sk_b".into(), None));
        // A connected account is the default platform's until seen elsewhere.
        assert_eq!(key(&acct("acct_X")), ("sk_a".into(), Some("acct_X".into())));
        ring.note_connected(&acct("acct_X"), &acct("acct_B"))
            .unwrap();
        assert_eq!(key(&acct("acct_X")), ("sk_b".into(), Some("acct_X".into())));
        assert_eq!(ring.platform_of(&acct("acct_X")), acct("acct_B"));
        ring.note_connected(&acct("acct_X"), &AccountId::PLATFORM)
            .unwrap();
        assert_eq!(key(&acct("acct_X")), ("sk_a".into(), Some("acct_X".into())));
        // No key for a platform: refused, and nothing noted.
        assert_eq!(
            ring.note_connected(&acct("acct_Y"), &acct("acct_Z")),
            Err(UnknownPlatform(acct("acct_Z")))
        );
        assert_eq!(ring.platform_of(&acct("acct_Y")), AccountId::PLATFORM);
        assert_eq!(ring.others(), vec![acct("acct_B")]);
    }
}
