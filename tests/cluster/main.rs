//! End-to-end tests: real `tandem` agent processes on loopback, driven
//! through the real CLI.

#![allow(clippy::unwrap_used)]

mod namespaces;
mod support;

mod config;
mod durability;
mod election;
mod faults;
mod grpc;
mod membership;
mod netns;
mod resources;
