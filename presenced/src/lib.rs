//! presenced: watches a blog's feeds, announces each new article exactly once on every
//! configured account, and queues the conversations that follow for a human.
//!
//! The binary is a thin shell over [`daemon::run`]; see ARCHITECTURE.md for the map.

pub mod config;
pub mod control;
pub mod core;
pub mod daemon;
pub mod feed;
pub mod fit;
pub mod http;
pub mod inbox;
pub mod memory;
pub mod network;
pub mod notify;
pub mod state;
pub mod store;
