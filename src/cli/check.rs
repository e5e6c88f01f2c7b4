//! `check` flags.
// TODO(client split): the flags move here from `client`; re-exported meanwhile.

pub use crate::client::check::CheckArgs;
