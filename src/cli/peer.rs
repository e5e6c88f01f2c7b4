//! `peer` flags.
// TODO(client split): the flags move here from `client`; re-exported meanwhile.

pub use crate::client::peer::PeerArgs;
