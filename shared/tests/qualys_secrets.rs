//! Credentials from AWS Secrets Manager (mocked with aws-smithy-mocks): read once and
//! cached, and errors that never quote the secret.

use aws_sdk_secretsmanager::operation::get_secret_value::{
    GetSecretValueError, GetSecretValueOutput,
};
use aws_sdk_secretsmanager::types::error::ResourceNotFoundException;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use qcvr::qualys::{CredentialsSource, QualysError, SecretsManagerCredentials};

const SECRET_ID: &str = "qcvr/qualys";

#[tokio::test]
async fn the_secret_is_read_once_and_cached() {
    let rule = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .match_requests(|r| r.secret_id() == Some(SECRET_ID))
        .then_output(|| {
            GetSecretValueOutput::builder()
                .secret_string(
                    r#"{"username":"acme3xy","password":"p&ss+w%rd","api_url":"https://qualysapi.qualys.eu","gateway_url":""}"#,
                )
                .build()
        });
    let client = mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, [&rule]);
    let source = SecretsManagerCredentials::new(client, SECRET_ID);

    let first = source.credentials().await.expect("credentials");
    let second = source.credentials().await.expect("cached");

    assert_eq!(first, second);
    assert_eq!(first.username, "acme3xy");
    assert_eq!(first.password.expose(), "p&ss+w%rd");
    assert_eq!(
        first.api_url.as_deref(),
        Some("https://qualysapi.qualys.eu")
    );
    assert_eq!(first.gateway_url, None, "an empty URL counts as unset");
    assert!(!format!("{first:?}").contains("p&ss"));
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn a_malformed_secret_is_reported_without_its_content() {
    let rule = mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_output(|| {
        GetSecretValueOutput::builder()
            .secret_string(r#"{"username":"acme3xy","password":12345678}"#)
            .build()
    });
    let client = mock_client!(aws_sdk_secretsmanager, [&rule]);

    let err = SecretsManagerCredentials::new(client, SECRET_ID)
        .credentials()
        .await
        .expect_err("password is not a string");

    assert!(matches!(err, QualysError::InvalidRequest(_)), "{err:?}");
    assert!(
        err.to_string().contains("\"username\" and \"password\""),
        "{err}"
    );
    assert!(!err.to_string().contains("12345678"), "{err}");
}

#[tokio::test]
async fn a_missing_secret_names_the_fix() {
    let rule = mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_error(|| {
        GetSecretValueError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("not here")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_secretsmanager, [&rule]);

    let err = SecretsManagerCredentials::new(client, SECRET_ID)
        .credentials()
        .await
        .expect_err("missing");

    assert_eq!(err.error_type(), "InvalidConfig");
    let shown = err.to_string();
    assert!(
        shown.contains("ResourceNotFoundException") && shown.contains("QCVR_QUALYS_SECRET_ID"),
        "{shown}"
    );
}
