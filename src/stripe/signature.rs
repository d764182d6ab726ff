//! Verification of the `Stripe-Signature` header (invariant 1: verify before
//! parse). Everything here works on the raw request bytes; nothing parses
//! JSON until [`WebhookVerifier::verify`] has said yes.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Stripe's own default; the official libraries use the same window.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a webhook was refused. Each variant maps to a distinct, documented
/// error code so an operator can tell a misconfigured secret from clock skew.
/// Displayed as a Stripe webhook's; [`SignatureError::message_for`] names
/// another header carrying the same scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    MissingHeader,
    MalformedHeader(&'static str),
    NoV1Signature,
    TimestampTooOld {
        age_secs: i64,
        tolerance_secs: i64,
    },
    TimestampInFuture {
        ahead_secs: i64,
        tolerance_secs: i64,
    },
    NoMatchingSignature,
}

/// The header Stripe signs its webhooks in.
pub const STRIPE_HEADER: &str = "Stripe-Signature";

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message_for(STRIPE_HEADER))
    }
}

impl std::error::Error for SignatureError {}

impl SignatureError {
    /// The message, naming `header` as the one the signature came in (the
    /// Salesforce relay signs with Stripe's scheme in a header of ours).
    pub fn message_for(&self, header: &str) -> String {
        match self {
            Self::MissingHeader => format!("the {header} header is missing"),
            Self::MalformedHeader(why) => format!("the {header} header is malformed: {why}"),
            Self::NoV1Signature => format!("the {header} header has no v1 signature"),
            Self::TimestampTooOld {
                age_secs,
                tolerance_secs,
            } => format!(
                "the signature timestamp is {age_secs} s old, more than the {tolerance_secs} s tolerance"
            ),
            Self::TimestampInFuture {
                ahead_secs,
                tolerance_secs,
            } => format!(
                "the signature timestamp is {ahead_secs} s in the future, more than the {tolerance_secs} s tolerance"
            ),
            Self::NoMatchingSignature => {
                "no v1 signature matches the payload for any configured secret".to_owned()
            }
        }
    }

    /// Stable machine-readable code for API error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader => "signature_missing",
            Self::MalformedHeader(_) | Self::NoV1Signature => "signature_malformed",
            Self::TimestampTooOld { .. } => "signature_timestamp_too_old",
            Self::TimestampInFuture { .. } => "signature_timestamp_in_future",
            Self::NoMatchingSignature => "signature_mismatch",
        }
    }
}

/// The parts of a `Stripe-Signature` header we act on.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    /// Decoded `v1` signatures; entries that are not 32 bytes of hex are
    /// dropped because they can never match an HMAC-SHA256.
    pub v1: Vec<[u8; 32]>,
}

impl SignatureHeader {
    /// Parses `t=…,v1=…[,v1=…][,v0=…]`. Unknown schemes are ignored, as Stripe
    /// documents, so new schemes can be added without breaking receivers.
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        let mut saw_v1 = false;
        for item in header.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            match key {
                // Like the official libraries, the first `t` wins.
                "t" if timestamp.is_none() => {
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(SignatureError::MalformedHeader("t is not a unix timestamp"));
                    }
                    timestamp = Some(
                        value
                            .parse::<i64>()
                            .map_err(|_| SignatureError::MalformedHeader("t is out of range"))?,
                    );
                }
                "v1" => {
                    saw_v1 = true;
                    let mut sig = [0u8; 32];
                    // Stripe sends lowercase hex and its libraries compare
                    // the text: an uppercase digit is not Stripe's signature
                    // (the fuzzer found we took it).
                    let lowercase = value.bytes().all(|b| !b.is_ascii_uppercase());
                    if lowercase && hex::decode_to_slice(value, &mut sig).is_ok() {
                        v1.push(sig);
                    }
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::MalformedHeader("no t= timestamp"))?;
        if !saw_v1 {
            return Err(SignatureError::NoV1Signature);
        }
        Ok(Self { timestamp, v1 })
    }
}

/// Checks webhook signatures against every configured secret, so secrets can
/// be rotated without downtime (old and new are both accepted meanwhile).
pub struct WebhookVerifier {
    secrets: Vec<SecretString>,
    tolerance_secs: i64,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl WebhookVerifier {
    pub fn new(secrets: Vec<SecretString>, tolerance_secs: i64) -> Self {
        assert!(
            !secrets.is_empty(),
            "at least one webhook secret is required"
        );
        Self {
            secrets,
            tolerance_secs,
        }
    }

    /// Verifies `header` against the raw `body` at time `now` (unix seconds).
    ///
    /// The signature is checked before the timestamp so that an attacker
    /// cannot learn anything about our clock from unsigned requests.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let header = match header {
            Some(h) if !h.is_empty() => h,
            _ => return Err(SignatureError::MissingHeader),
        };
        let parsed = SignatureHeader::parse(header)?;
        let matched = self.secrets.iter().any(|secret| {
            let mac = signed_payload_mac(secret.expose_secret().as_bytes(), parsed.timestamp, body);
            // `verify_slice` compares in constant time.
            parsed
                .v1
                .iter()
                .any(|sig| mac.clone().verify_slice(sig).is_ok())
        });
        if !matched {
            return Err(SignatureError::NoMatchingSignature);
        }
        let age = now - parsed.timestamp;
        if age > self.tolerance_secs {
            return Err(SignatureError::TimestampTooOld {
                age_secs: age,
                tolerance_secs: self.tolerance_secs,
            });
        }
        if -age > self.tolerance_secs {
            return Err(SignatureError::TimestampInFuture {
                ahead_secs: -age,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }
}

fn signed_payload_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Builds a valid `Stripe-Signature` header: what Stripe does when it sends
/// a webhook. Used by tests, the benchmark's load generator and the dev
/// script's "send a test event" helper.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let sig = signed_payload_mac(secret.as_bytes(), timestamp, body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stripes_lowercase_hex_is_a_signature() {
        let header = sign("whsec_x", NOW, BODY);
        let (t, sig) = header.split_once(",v1=").unwrap();
        assert!(
            sig.bytes().any(|b| b.is_ascii_alphabetic()),
            "a sig with letters"
        );
        // The same 32 bytes, spelled in uppercase.
        let upper = format!("{t},v1={}", sig.to_uppercase());
        let v = verifier(&["whsec_x"]);
        assert!(v.verify(Some(&header), BODY, NOW).is_ok());
        assert_eq!(
            v.verify(Some(&upper), BODY, NOW),
            Err(SignatureError::NoMatchingSignature),
            "{upper}"
        );
    }

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

    fn verifier(secrets: &[&str]) -> WebhookVerifier {
        WebhookVerifier::new(
            secrets
                .iter()
                .map(|s| SecretString::from(s.to_string()))
                .collect(),
            DEFAULT_TOLERANCE_SECS,
        )
    }

    /// name, configured secrets, header, body, expected error code
    type Case<'a> = (
        &'a str,
        Vec<&'a str>,
        Option<String>,
        &'a [u8],
        Result<(), &'a str>,
    );

    #[test]
    fn table() {
        let good = sign("whsec_a", NOW, BODY);
        let good_sig = good.split_once(",v1=").unwrap().1.to_string();
        let other_sig = sign("whsec_x", NOW, BODY)
            .split_once(",v1=")
            .unwrap()
            .1
            .to_string();
        let cases: Vec<Case> = vec![
            ("valid", vec!["whsec_a"], Some(good.clone()), BODY, Ok(())),
            (
                "several v1, one valid",
                vec!["whsec_a"],
                Some(format!("t={NOW},v1={other_sig},v1={good_sig},v0=abc")),
                BODY,
                Ok(()),
            ),
            (
                "second configured secret",
                vec!["whsec_old", "whsec_a"],
                Some(good.clone()),
                BODY,
                Ok(()),
            ),
            (
                "wrong secret",
                vec!["whsec_b"],
                Some(good.clone()),
                BODY,
                Err("signature_mismatch"),
            ),
            (
                "tampered body",
                vec!["whsec_a"],
                Some(good.clone()),
                br#"{"id":"evt_2","object":"event"}"#,
                Err("signature_mismatch"),
            ),
            (
                "missing header",
                vec!["whsec_a"],
                None,
                BODY,
                Err("signature_missing"),
            ),
            (
                "empty header",
                vec!["whsec_a"],
                Some(String::new()),
                BODY,
                Err("signature_missing"),
            ),
            (
                "garbage header",
                vec!["whsec_a"],
                Some("hello world".into()),
                BODY,
                Err("signature_malformed"),
            ),
            (
                "no v1",
                vec!["whsec_a"],
                Some(format!("t={NOW},v0={good_sig}")),
                BODY,
                Err("signature_malformed"),
            ),
            (
                "non-numeric t",
                vec!["whsec_a"],
                Some(format!("t=abc,v1={good_sig}")),
                BODY,
                Err("signature_malformed"),
            ),
            (
                "v1 not hex",
                vec!["whsec_a"],
                Some(format!("t={NOW},v1=zz")),
                BODY,
                Err("signature_mismatch"),
            ),
        ];
        for (name, secrets, header, body, expected) in cases {
            let got = verifier(&secrets)
                .verify(header.as_deref(), body, NOW)
                .map_err(|e| e.code());
            assert_eq!(got, expected, "case {name}");
        }
    }

    #[test]
    fn tolerance_applies_in_both_directions() {
        let v = verifier(&["whsec_a"]);
        for (offset, expected) in [
            (-300, Ok(())),
            (-301, Err("signature_timestamp_too_old")),
            (300, Ok(())),
            (301, Err("signature_timestamp_in_future")),
        ] {
            let t = NOW + offset;
            let got = v
                .verify(Some(&sign("whsec_a", t, BODY)), BODY, NOW)
                .map_err(|e| e.code());
            assert_eq!(got, expected, "offset {offset}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let printed = format!("{:?}", verifier(&["whsec_supersecret"]));
        assert!(!printed.contains("supersecret"), "{printed}");
    }

    proptest::proptest! {
        #[test]
        fn any_single_byte_change_is_rejected(body in proptest::collection::vec(proptest::num::u8::ANY, 1..256), idx in 0usize..256, flip in 1u8..=255) {
            let v = verifier(&["whsec_p"]);
            let header = sign("whsec_p", NOW, &body);
            proptest::prop_assert!(v.verify(Some(&header), &body, NOW).is_ok());
            let mut tampered = body.clone();
            let i = idx % tampered.len();
            tampered[i] ^= flip;
            proptest::prop_assert_eq!(v.verify(Some(&header), &tampered, NOW), Err(SignatureError::NoMatchingSignature));
        }

        #[test]
        fn parser_never_panics(header in ".{0,200}") {
            let _ = SignatureHeader::parse(&header);
        }
    }
}
