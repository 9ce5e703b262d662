//! presencectl's library: the control protocol shared with presenced ([`proto`]) and a client
//! for it ([`client`]). The `presencectl` binary is a thin CLI over these.

pub mod client;
pub mod proto;
