//! The X (Twitter API v2) account. Not implemented yet: the account reports that and posts
//! nothing.

use std::collections::BTreeMap;

use super::{AccountInfo, NetError, Network, Post, Posted};
use crate::config::Secret;

/// The API's base URL when the config names none.
pub const DEFAULT_API: &str = "https://api.x.com";

#[derive(Debug)]
pub struct X {
    #[allow(dead_code)]
    account: String,
}

impl X {
    /// `api` is the API base URL, `session` the tokens kept from the last run (or stored by
    /// `presencectl login x`).
    pub fn new(
        account: &str,
        _api: &str,
        _client_id: &str,
        _client_secret: Option<Secret>,
        _session: BTreeMap<String, String>,
        _http: reqwest::Client,
    ) -> X {
        X { account: account.to_owned() }
    }
}

impl Network for X {
    async fn start(&mut self) -> Result<AccountInfo, NetError> {
        Err(NetError::Rejected("x accounts are not supported yet".into()))
    }

    async fn post(&mut self, _post: &Post) -> Result<Posted, NetError> {
        Err(NetError::Rejected("x accounts are not supported yet".into()))
    }

    async fn find_post(&mut self, _post: &Post) -> Result<Option<Posted>, NetError> {
        Ok(None)
    }
}
