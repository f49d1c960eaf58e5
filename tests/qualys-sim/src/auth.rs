//! Gateway JWTs: issuing them on `POST /auth`, checking them on Container Security calls.
//!
//! Tokens look like the real ones (three base64url parts, HS512 header, `iat`/`exp` claims,
//! 64 signature bytes) and are remembered by the simulator, so revoking all of them at once
//! ("expire all tokens") is possible. Nothing here is real cryptography.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sha2::{Digest, Sha512};

use crate::rng::SplitMix;

/// Why a bearer token was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    /// Missing, malformed or never issued here.
    Invalid,
    /// Past `exp`, or revoked by a fault.
    Expired,
}

#[derive(Debug)]
struct Issued {
    exp_secs: i64,
    revoked: bool,
}

/// All tokens issued by this simulator.
#[derive(Debug)]
pub(crate) struct TokenBook {
    issued: HashMap<String, Issued>,
    rng: SplitMix,
}

impl TokenBook {
    /// An empty book; `seed` makes the claims deterministic.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            issued: HashMap::new(),
            rng: SplitMix::derive(seed, 0x70CE),
        }
    }

    /// Issues a token for `username` valid `lifetime_secs` from `now_secs`.
    pub(crate) fn issue(&mut self, username: &str, now_secs: i64, lifetime_secs: u64) -> String {
        let exp_secs = now_secs + lifetime_secs as i64;
        let header = json!({"typ": "JWT", "alg": "HS512"});
        let claims = json!({
            "sub": username,
            "iss": "qualys",
            "port": 443,
            "tenantId": self.rng.uuid(),
            "userUuid": self.rng.uuid(),
            "username": username,
            "platform": "SIM",
            "iat": now_secs,
            "exp": exp_secs,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut hasher = Sha512::new();
        hasher.update(self.rng.next_u64().to_le_bytes());
        hasher.update(signing_input.as_bytes());
        let token = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(hasher.finalize())
        );
        self.issued.insert(
            token.clone(),
            Issued {
                exp_secs,
                revoked: false,
            },
        );
        token
    }

    /// Checks an `Authorization` header value.
    pub(crate) fn check(
        &self,
        authorization: Option<&str>,
        now_secs: i64,
    ) -> Result<(), TokenProblem> {
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(TokenProblem::Invalid)?;
        let issued = self.issued.get(token).ok_or(TokenProblem::Invalid)?;
        if issued.revoked || now_secs >= issued.exp_secs {
            return Err(TokenProblem::Expired);
        }
        Ok(())
    }

    /// Revokes every token issued so far.
    pub(crate) fn expire_all(&mut self) {
        for issued in self.issued.values_mut() {
            issued.revoked = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_three_parts_and_matching_exp() {
        let mut book = TokenBook::new(1);
        let token = book.issue("acme", 1_000, 14_400);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
                .expect("json");
        assert_eq!(claims["exp"], 15_400);
        assert_eq!(claims["iat"], 1_000);
        let bearer = format!("Bearer {token}");
        assert_eq!(book.check(Some(&bearer), 15_399), Ok(()));
        assert_eq!(
            book.check(Some(&bearer), 15_400),
            Err(TokenProblem::Expired)
        );
        assert_eq!(
            book.check(Some("Bearer nope"), 1_000),
            Err(TokenProblem::Invalid)
        );
        assert_eq!(book.check(None, 1_000), Err(TokenProblem::Invalid));
        book.expire_all();
        assert_eq!(book.check(Some(&bearer), 1_001), Err(TokenProblem::Expired));
    }
}
