//! Building the production dependencies from the environment, once per Lambda container or
//! CLI process: AWS clients, the Qualys client with Secrets Manager credentials, the DynamoDB
//! store and the sync settings.

use aws_config::BehaviorVersion;

use crate::clock::SystemClock;
use crate::qualys::QualysError;
use crate::qualys::auth::SecretsManagerCredentials;
use crate::qualys::client::{ClientSettings, QualysClient};
use crate::store::dynamo::DynamoStore;
use crate::sync::{Deps, SyncError, SyncSettings};

/// The Qualys client as deployed: credentials from Secrets Manager.
pub type ProductionQualys = QualysClient<SecretsManagerCredentials>;

/// Everything a step needs in production.
pub struct Production {
    /// The Qualys client.
    pub qualys: ProductionQualys,
    /// The DynamoDB store.
    pub store: DynamoStore,
    /// The system clock.
    pub clock: SystemClock,
    /// The sync tunables.
    pub settings: SyncSettings,
}

/// A deployment that cannot start; the message names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A required environment variable is missing.
    #[error("{0} is not set: set it in the function's environment (see infra/template.yaml)")]
    MissingVariable(&'static str),
    /// The Qualys settings are not usable.
    #[error(transparent)]
    Qualys(#[from] QualysError),
    /// The sync settings are not usable.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl Production {
    /// Reads `QCVR_QUALYS_SECRET_ID`, the Qualys URLs, `QCVR_TABLE_PREFIX` and the tunables;
    /// AWS settings come from the usual AWS environment (`AWS_ENDPOINT_URL` locally).
    pub async fn from_env() -> Result<Production, BootError> {
        let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
        let secret_id = std::env::var("QCVR_QUALYS_SECRET_ID")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or(BootError::MissingVariable("QCVR_QUALYS_SECRET_ID"))?;
        let credentials =
            SecretsManagerCredentials::new(aws_sdk_secretsmanager::Client::new(&aws), secret_id);
        let qualys = QualysClient::connect(ClientSettings::from_env()?, credentials).await?;
        let store = DynamoStore::from_env(aws_sdk_dynamodb::Client::new(&aws));
        Ok(Production {
            qualys,
            store,
            clock: SystemClock,
            settings: SyncSettings::from_env()?,
        })
    }

    /// The dependencies of a step, borrowed from here.
    pub fn deps(&self) -> Deps<'_, ProductionQualys, DynamoStore, SystemClock> {
        Deps {
            qualys: &self.qualys,
            store: &self.store,
            clock: &self.clock,
            settings: &self.settings,
        }
    }
}
