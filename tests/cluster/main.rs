//! End-to-end tests: real `tandem` agent processes on loopback, driven
//! through the real CLI.

#![allow(clippy::unwrap_used)]

mod support;

mod config;
mod dns;
mod durability;
mod election;
mod fencing;
mod grpc;
mod membership;
mod netns;
mod resources;
