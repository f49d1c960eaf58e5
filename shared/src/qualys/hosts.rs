//! The two Qualys hosts of a platform: the API server (`qualysapi…`, KnowledgeBase, Basic
//! auth) and the API gateway (`gateway…`, Container Security, JWT). They are kept apart;
//! the gateway is derived from the API server by the platform table unless given.

use url::Url;

use super::QualysError;

/// API server host → gateway host, per Qualys platform (POD). US1 and EU1 are not a
/// `qualysapi`→`gateway` swap, which is why this is a table.
const PLATFORMS: &[(&str, &str, &str)] = &[
    ("US1", "qualysapi.qualys.com", "gateway.qg1.apps.qualys.com"),
    (
        "US2",
        "qualysapi.qg2.apps.qualys.com",
        "gateway.qg2.apps.qualys.com",
    ),
    (
        "US3",
        "qualysapi.qg3.apps.qualys.com",
        "gateway.qg3.apps.qualys.com",
    ),
    (
        "US4",
        "qualysapi.qg4.apps.qualys.com",
        "gateway.qg4.apps.qualys.com",
    ),
    ("EU1", "qualysapi.qualys.eu", "gateway.qg1.apps.qualys.eu"),
    (
        "EU2",
        "qualysapi.qg2.apps.qualys.eu",
        "gateway.qg2.apps.qualys.eu",
    ),
    (
        "EU3",
        "qualysapi.qg3.apps.qualys.it",
        "gateway.qg3.apps.qualys.it",
    ),
    (
        "IN1",
        "qualysapi.qg1.apps.qualys.in",
        "gateway.qg1.apps.qualys.in",
    ),
    (
        "CA1",
        "qualysapi.qg1.apps.qualys.ca",
        "gateway.qg1.apps.qualys.ca",
    ),
    (
        "AE1",
        "qualysapi.qg1.apps.qualys.ae",
        "gateway.qg1.apps.qualys.ae",
    ),
    (
        "UK1",
        "qualysapi.qg1.apps.qualys.co.uk",
        "gateway.qg1.apps.qualys.co.uk",
    ),
    (
        "AU1",
        "qualysapi.qg1.apps.qualys.com.au",
        "gateway.qg1.apps.qualys.com.au",
    ),
    (
        "KSA1",
        "qualysapi.qg1.apps.qualysksa.com",
        "gateway.qg1.apps.qualysksa.com",
    ),
    ("GOV1", "qualysapi.gov1.qualys.us", "gateway.gov1.qualys.us"),
];

/// The base URLs of one Qualys platform, without trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualysHosts {
    api_url: String,
    gateway_url: String,
}

impl QualysHosts {
    /// Both hosts: `gateway_url` when given, else derived from `api_url` by the platform
    /// table. URLs must be `https://`, or `http://` on the loopback (the local simulator).
    pub fn new(api_url: &str, gateway_url: Option<&str>) -> Result<QualysHosts, QualysError> {
        let api = checked_base("API server URL", api_url)?;
        let gateway = match gateway_url {
            Some(g) => checked_base("gateway URL", g)?,
            None => gateway_for(&api)?,
        };
        Ok(QualysHosts {
            api_url: trimmed(&api),
            gateway_url: trimmed(&gateway),
        })
    }

    /// The API server base URL (KnowledgeBase).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The gateway base URL (Container Security and `/auth`).
    pub fn gateway_url(&self) -> &str {
        &self.gateway_url
    }
}

/// The gateway of a known Qualys API server URL.
pub fn gateway_for(api_url: &Url) -> Result<Url, QualysError> {
    let host = api_url.host_str().unwrap_or_default().to_ascii_lowercase();
    let found = PLATFORMS
        .iter()
        .find(|(_, api, gateway)| *api == host || *gateway == host);
    match found {
        Some((_, _, gateway)) => Url::parse(&format!("https://{gateway}")).map_err(|e| {
            QualysError::InvalidRequest(format!("built-in gateway URL does not parse: {e}"))
        }),
        None => Err(QualysError::InvalidRequest(format!(
            "no known Qualys platform has the API server {host}; set the gateway URL \
             explicitly (QCVR_QUALYS_GATEWAY_URL or \"gateway_url\" in the secret)"
        ))),
    }
}

fn checked_base(what: &str, raw: &str) -> Result<Url, QualysError> {
    // The raw value is never echoed: a URL with user info would leak a password.
    let url = Url::parse(raw.trim()).map_err(|e| {
        QualysError::InvalidRequest(format!(
            "the {what} is not a URL ({e}); use e.g. https://qualysapi.qg2.apps.qualys.com"
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(QualysError::InvalidRequest(format!(
            "the {what} must not carry a user name or password; put them in the secret"
        )));
    }
    let Some(host) = url.host_str() else {
        return Err(QualysError::InvalidRequest(format!(
            "the {what} has no host"
        )));
    };
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        scheme => {
            return Err(QualysError::InvalidRequest(format!(
                "the {what} ({scheme}://{host}) must use https:// (plain http is allowed only \
                 on 127.0.0.1)"
            )));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(QualysError::InvalidRequest(format!(
            "the {what} ({host}) must be a base URL without query or fragment"
        )));
    }
    Ok(url)
}

fn trimmed(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(api: &str) -> Result<QualysHosts, QualysError> {
        QualysHosts::new(api, None)
    }

    #[test]
    fn us1_and_eu1_use_the_table_not_a_string_swap() {
        let us1 = hosts("https://qualysapi.qualys.com").expect("US1 is known");
        assert_eq!(us1.gateway_url(), "https://gateway.qg1.apps.qualys.com");
        let eu1 = hosts("https://qualysapi.qualys.eu/").expect("EU1 is known");
        assert_eq!(eu1.gateway_url(), "https://gateway.qg1.apps.qualys.eu");
        assert_eq!(eu1.api_url(), "https://qualysapi.qualys.eu");
    }

    #[test]
    fn every_platform_derives_its_gateway() {
        for (pod, api, gateway) in PLATFORMS {
            let h = hosts(&format!("https://{api}")).expect(pod);
            assert_eq!(h.gateway_url(), format!("https://{gateway}"), "{pod}");
        }
        let ae1 = hosts("https://qualysapi.qg1.apps.qualys.ae").expect("AE1");
        assert_eq!(ae1.gateway_url(), "https://gateway.qg1.apps.qualys.ae");
    }

    #[test]
    fn unknown_host_asks_for_the_gateway() {
        let err = hosts("https://qualysapi.private.example").expect_err("unknown");
        assert!(err.to_string().contains("set the gateway URL"), "{err}");
        let h = QualysHosts::new(
            "https://qualysapi.private.example",
            Some("https://gw.private.example/"),
        )
        .expect("explicit gateway");
        assert_eq!(h.gateway_url(), "https://gw.private.example");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let local = QualysHosts::new("http://127.0.0.1:9000", Some("http://127.0.0.1:9001"))
            .expect("loopback");
        assert_eq!(local.api_url(), "http://127.0.0.1:9000");
        assert!(QualysHosts::new("http://qualysapi.qualys.com", None).is_err());
        assert!(QualysHosts::new("not a url", None).is_err());
        assert!(QualysHosts::new("https://u:p@qualysapi.qualys.com", None).is_err());
    }
}
