//! Adapters: the ports of `identity::port` implemented over real systems.
//!
//! `local` keeps everything in a data dir (no cluster needed); `kube` is the only module that
//! talks to Kubernetes; `memory` (tests only) keeps state in memory.

pub mod kube;
pub mod local;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
