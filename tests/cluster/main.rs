//! End-to-end tests: real `tandem` agent processes on loopback, driven
//! through the real CLI.

#![allow(clippy::unwrap_used)]

mod namespaces;
mod support;

mod config;
mod dns;
mod durability;
mod election;
mod faults;
mod fencing;
mod grpc;
mod membership;
mod netns;
mod operator;
mod resources;
