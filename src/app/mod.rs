//! Running what `Config::build()` made: the service, and the operator commands.

pub mod operator;
