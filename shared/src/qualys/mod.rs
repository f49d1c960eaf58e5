//! The Qualys client: Container Security (`/csapi/v1.3`, gateway JWT) and the
//! KnowledgeBase (`/api/2.0`, Basic auth), behind the [`QualysApi`] trait the sync steps use.
//!
//! This module owns every byte exchanged with Qualys: hosts, auth, paging, rate limits,
//! retries and parsing. It never touches the store.

pub mod auth;
pub mod client;
pub mod cs;
pub mod error;
pub mod hosts;
pub mod kb_xml;
pub mod limits;
pub mod qql;
pub mod time;

use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::ListingMode;
use crate::model::{Container, Image, KbEntry, Qid, Vulnerability};
use crate::run::Window;

pub use auth::{
    Credentials, CredentialsSource, Password, SecretsManagerCredentials, StaticCredentials,
};
pub use client::{ClientSettings, QualysClient};
pub use error::QualysError;
pub use hosts::QualysHosts;
pub use limits::RetryPolicy;
pub use qql::Qql;

/// What to list: the configured filter, the incremental window and the page size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerQuery {
    /// The configured filter, already validated.
    pub filter: Qql,
    /// The window on `updated`.
    pub window: Window,
    /// Records per request (1..=1000; capped at 250 in bulk mode).
    pub page_size: u32,
    /// Which endpoint to walk.
    pub mode: ListingMode,
}

/// Where a listing stands; saved between Lambda invocations so the next one resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ListCursor {
    /// Nothing listed yet.
    #[default]
    Start,
    /// Paged endpoint, keyset on `updated`: the next request asks for records updated at or
    /// after `updated_ms`, skipping `seen_at_bound` (records at exactly that time already
    /// returned), from page `page` (above 1 only when more than a page share one time).
    Paged {
        /// Lower bound on `updated`, epoch ms.
        updated_ms: i64,
        /// Container shas already returned whose `updated` equals the bound.
        seen_at_bound: Vec<String>,
        /// Page number within the bound.
        page: u32,
    },
    /// Bulk endpoint: the `paginationQuery` of the last `Link: rel=next`.
    Bulk {
        /// The opaque cursor, decoded.
        pagination_query: String,
    },
}

/// One page of containers and where to go next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPage {
    /// The containers of this page, without duplicates of earlier pages.
    pub containers: Vec<Container>,
    /// Records with a null `sha`, skipped.
    pub skipped_without_sha: u32,
    /// `None` when the listing is complete.
    pub next: Option<ListCursor>,
}

/// Everything the sync steps ask of Qualys. Each call gives up with
/// [`QualysError::RateLimited`] rather than wait past `deadline`.
pub trait QualysApi: Send + Sync {
    /// One page of containers matching `query`, starting at `cursor`.
    fn list_containers(
        &self,
        query: &ContainerQuery,
        cursor: &ListCursor,
        deadline: Instant,
    ) -> impl Future<Output = Result<ContainerPage, QualysError>> + Send;

    /// The vulnerabilities of one container.
    fn container_vulnerabilities(
        &self,
        container_sha: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Vulnerability>, QualysError>> + Send;

    /// The details of one image; `None` when Qualys has no such image or no scan of it yet.
    fn image(
        &self,
        image_sha: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<Image>, QualysError>> + Send;

    /// The KnowledgeBase entries of `qids` (one request per batch the client chooses);
    /// unknown QIDs are simply absent.
    fn knowledge_base(
        &self,
        qids: &[Qid],
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<KbEntry>, QualysError>> + Send;
}
