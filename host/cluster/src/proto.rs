//! Generated code of `host/proto/stead/cluster/v1/peer.proto` (the
//! node-to-node protocol, built by `build.rs`): only `forward` uses it.

#![allow(clippy::all, unreachable_pub, missing_docs)]

tonic::include_proto!("stead.cluster.v1");
