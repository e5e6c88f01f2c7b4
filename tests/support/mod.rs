//! Shared test support. Each test binary uses a subset, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

pub mod fake_apiserver;
