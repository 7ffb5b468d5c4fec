//! Generated code for the gRPC package `tandem.v1` (`proto/tandem/v1/`).
//! Only `tandem-api`, `tandem-raft`'s network and the CLI use it.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("tandem.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tandem_descriptor");
