//! The Bluesky (AT Protocol) account. Not implemented yet: the account reports that and
//! posts nothing.

use std::collections::BTreeMap;

use super::{AccountInfo, NetError, Network, Post, Posted};
use crate::config::Secret;

/// Where accounts live when the config names no PDS.
pub const DEFAULT_SERVICE: &str = "https://bsky.social";

#[derive(Debug)]
pub struct Bluesky {
    #[allow(dead_code)]
    account: String,
}

impl Bluesky {
    /// `service` is the PDS URL, `session` the data kept from the last run.
    pub fn new(
        account: &str,
        _service: &str,
        _handle: &str,
        _password: Secret,
        _session: BTreeMap<String, String>,
        _http: reqwest::Client,
    ) -> Bluesky {
        Bluesky { account: account.to_owned() }
    }
}

impl Network for Bluesky {
    async fn start(&mut self) -> Result<AccountInfo, NetError> {
        Err(NetError::Rejected("bluesky accounts are not supported yet".into()))
    }

    async fn post(&mut self, _post: &Post) -> Result<Posted, NetError> {
        Err(NetError::Rejected("bluesky accounts are not supported yet".into()))
    }

    async fn find_post(&mut self, _post: &Post) -> Result<Option<Posted>, NetError> {
        Ok(None)
    }
}
