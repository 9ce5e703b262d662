//! The Facebook Page account. Not implemented yet: the account reports that and posts
//! nothing.

use std::collections::BTreeMap;

use super::{AccountInfo, NetError, Network, Post, Posted};
use crate::config::Secret;

/// The Graph API's base URL (with its pinned version) when the config names none.
pub const DEFAULT_API: &str = "https://graph.facebook.com/v25.0";

#[derive(Debug)]
pub struct Facebook {
    #[allow(dead_code)]
    account: String,
}

impl Facebook {
    pub fn new(
        account: &str,
        _api: &str,
        _page_id: &str,
        _token: Secret,
        _session: BTreeMap<String, String>,
        _http: reqwest::Client,
    ) -> Facebook {
        Facebook { account: account.to_owned() }
    }
}

impl Network for Facebook {
    async fn start(&mut self) -> Result<AccountInfo, NetError> {
        Err(NetError::Rejected("facebook accounts are not supported yet".into()))
    }

    async fn post(&mut self, _post: &Post) -> Result<Posted, NetError> {
        Err(NetError::Rejected("facebook accounts are not supported yet".into()))
    }

    async fn find_post(&mut self, _post: &Post) -> Result<Option<Posted>, NetError> {
        Ok(None)
    }
}
