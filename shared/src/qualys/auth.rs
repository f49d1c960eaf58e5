//! Credentials and tokens.
//!
//! The username and password come from a [`CredentialsSource`]: AWS Secrets Manager in
//! production (fetched once, then cached), a static value in tests and local runs. The
//! password and the gateway JWT live in types whose `Debug` prints `***`, and no error or
//! log line ever contains them.
//!
//! The gateway JWT is cached and refreshed 10 minutes before its `exp` (read from the token
//! without verifying it), or 3 h 50 after issue when `exp` cannot be read. Refreshes are
//! serialised: one at a time per client.

use std::fmt;
use std::future::Future;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell};

use super::QualysError;

/// A password. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A Qualys login, plus the platform URLs when the secret carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Qualys user name.
    pub username: String,
    /// Its password.
    pub password: Password,
    /// API server URL from the secret, if set.
    pub api_url: Option<String>,
    /// Gateway URL from the secret, if set.
    pub gateway_url: Option<String>,
}

/// Where the client gets its Qualys login.
pub trait CredentialsSource: Send + Sync {
    /// The current credentials.
    fn credentials(&self) -> impl Future<Output = Result<Credentials, QualysError>> + Send;
}

/// Fixed credentials, for tests and local runs against the simulator.
#[derive(Debug, Clone)]
pub struct StaticCredentials(Credentials);

impl StaticCredentials {
    /// A login without platform URLs.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> StaticCredentials {
        StaticCredentials(Credentials {
            username: username.into(),
            password: Password::new(password),
            api_url: None,
            gateway_url: None,
        })
    }
}

impl CredentialsSource for StaticCredentials {
    async fn credentials(&self) -> Result<Credentials, QualysError> {
        Ok(self.0.clone())
    }
}

/// The secret's JSON: `{"username","password"}` plus optional `"api_url"`, `"gateway_url"`.
/// Deliberately without `Debug`.
#[derive(Deserialize)]
struct SecretJson {
    username: String,
    password: String,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    gateway_url: Option<String>,
}

/// Credentials read from AWS Secrets Manager once per client (i.e. per Lambda container).
#[derive(Debug)]
pub struct SecretsManagerCredentials {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    cached: OnceCell<Credentials>,
}

impl SecretsManagerCredentials {
    /// Reads `secret_id` (name or ARN) with `client` on first use.
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        SecretsManagerCredentials {
            client,
            secret_id: secret_id.into(),
            cached: OnceCell::new(),
        }
    }

    async fn fetch(&self) -> Result<Credentials, QualysError> {
        let id = &self.secret_id;
        let output = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| match &e {
                SdkError::ServiceError(service)
                    if !matches!(service.err(), GetSecretValueError::InternalServiceError(_)) =>
                {
                    QualysError::InvalidRequest(format!(
                        "cannot read the Qualys secret {id} ({}); check QCVR_QUALYS_SECRET_ID \
                         and the function's secretsmanager:GetSecretValue permission",
                        secret_error_name(service.err())
                    ))
                }
                _ => QualysError::Transient {
                    detail: format!("Secrets Manager unavailable while reading {id}"),
                },
            })?;
        let invalid = || {
            QualysError::InvalidRequest(format!(
                "the Qualys secret {id} must be JSON with non-empty string fields \"username\" \
                 and \"password\" (optional \"api_url\", \"gateway_url\")"
            ))
        };
        // The parse error is dropped on purpose: serde messages can quote the secret's text.
        let secret: SecretJson = output
            .secret_string()
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(invalid)?;
        if secret.username.trim().is_empty() || secret.password.is_empty() {
            return Err(invalid());
        }
        let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        Ok(Credentials {
            username: secret.username.trim().to_owned(),
            password: Password::new(secret.password),
            api_url: non_empty(secret.api_url),
            gateway_url: non_empty(secret.gateway_url),
        })
    }
}

/// The error's code, or its variant's name when the error carries no code.
fn secret_error_name(error: &GetSecretValueError) -> &str {
    error.code().unwrap_or(match error {
        GetSecretValueError::ResourceNotFoundException(_) => "ResourceNotFoundException",
        GetSecretValueError::DecryptionFailure(_) => "DecryptionFailure",
        GetSecretValueError::InvalidParameterException(_) => "InvalidParameterException",
        GetSecretValueError::InvalidRequestException(_) => "InvalidRequestException",
        _ => "unknown error",
    })
}

impl CredentialsSource for SecretsManagerCredentials {
    async fn credentials(&self) -> Result<Credentials, QualysError> {
        self.cached.get_or_try_init(|| self.fetch()).await.cloned()
    }
}

/// A gateway JWT. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BearerToken(String);

impl BearerToken {
    /// The token itself, for the `Authorization` header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Refresh this long before `exp`.
const REFRESH_LEEWAY_MINUTES: i64 = 10;
/// Refresh this long after issue when `exp` is unreadable (tokens live 4 h).
const FALLBACK_LIFETIME_MINUTES: i64 = 230;

/// The `exp` claim of a JWT, read without verifying the signature.
pub(crate) fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let seconds = exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))?;
    DateTime::from_timestamp(seconds, 0)
}

/// When a token issued at `now` must be replaced.
pub(crate) fn refresh_time(token: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    match jwt_expiry(token) {
        Some(exp) => exp - ChronoDuration::minutes(REFRESH_LEEWAY_MINUTES),
        None => now + ChronoDuration::minutes(FALLBACK_LIFETIME_MINUTES),
    }
}

#[derive(Debug)]
struct CachedToken {
    token: BearerToken,
    refresh_at: DateTime<Utc>,
}

/// The client's gateway token, refreshed by one caller at a time.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    current: Mutex<Option<CachedToken>>,
}

impl TokenCache {
    /// The cached token while it is fresh; otherwise a new one from `fetch`. Callers queue
    /// behind one refresh instead of each asking `/auth`.
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<BearerToken, QualysError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, QualysError>>,
    {
        let mut current = self.current.lock().await;
        if let Some(cached) = current.as_ref()
            && Utc::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let token = fetch().await?;
        let refresh_at = refresh_time(&token, Utc::now());
        tracing::debug!(%refresh_at, "new gateway token");
        let token = BearerToken(token);
        *current = Some(CachedToken {
            token: token.clone(),
            refresh_at,
        });
        Ok(token)
    }

    /// Drops `stale` after a 401, unless another caller already replaced it.
    pub(crate) async fn invalidate(&self, stale: &BearerToken) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| &c.token == stale) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let creds = StaticCredentials::new("acme3xy", "hunter2&+%").0;
        let shown = format!("{creds:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"));
        let token = BearerToken("eyJhbGciOi.secret.sig".into());
        assert_eq!(format!("{token:?}"), "***");
    }

    #[test]
    fn expiry_is_read_from_the_payload() {
        let exp = jwt_expiry(&jwt(r#"{"exp":1712066310,"iat":1712051910}"#));
        assert_eq!(exp, DateTime::from_timestamp(1_712_066_310, 0));
        let now = DateTime::from_timestamp(1_712_051_910, 0).expect("valid");
        assert_eq!(
            refresh_time(&jwt(r#"{"exp":1712066310}"#), now),
            DateTime::from_timestamp(1_712_066_310 - 600, 0).expect("valid")
        );
        for unreadable in ["opaque", "a.!!!.c", &jwt(r#"{"iat":1}"#), &jwt("[1]")] {
            assert_eq!(jwt_expiry(unreadable), None, "{unreadable}");
            assert_eq!(
                refresh_time(unreadable, now),
                now + ChronoDuration::minutes(230)
            );
        }
    }

    #[test]
    fn the_fixture_token_expires_four_hours_after_issue() {
        let dir = std::env::var("QCVR_FIXTURES_DIR").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/qualys").to_owned()
        });
        let token = std::fs::read_to_string(format!("{dir}/auth/token.txt")).expect("fixture");
        assert_eq!(
            jwt_expiry(token.trim()),
            DateTime::from_timestamp(1_712_066_310, 0)
        );
    }

    #[tokio::test]
    async fn cache_refreshes_stale_tokens_and_serves_fresh_ones() {
        let cache = TokenCache::default();
        let fresh = jwt(&format!(
            r#"{{"exp":{}}}"#,
            Utc::now().timestamp() + 4 * 3600
        ));
        let got = cache
            .get(|| async { Ok(fresh.clone()) })
            .await
            .expect("fetched");
        let again = cache
            .get(|| async {
                Err(QualysError::Transient {
                    detail: "must not refetch".into(),
                })
            })
            .await
            .expect("cached");
        assert_eq!(got, again);
        cache.invalidate(&BearerToken("other".into())).await;
        assert!(
            cache
                .get(|| async { Err(QualysError::Transient { detail: "x".into() }) })
                .await
                .is_ok()
        );
        cache.invalidate(&got).await;
        assert!(
            cache
                .get(|| async { Err(QualysError::Transient { detail: "x".into() }) })
                .await
                .is_err()
        );
    }
}
