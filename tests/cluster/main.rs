//! End-to-end tests: real `tandem` agent processes on loopback, driven
//! through the real CLI.

#![allow(clippy::unwrap_used)]

mod namespaces;
mod support;

mod backup;
mod browser;
mod checks;
mod cli;
mod compose;
mod config;
mod dns;
mod dns_flood;
mod durability;
mod election;
mod executor;
mod faults;
mod fencing;
mod grpc;
mod handover;
mod http;
mod membership;
mod netns;
mod operate;
mod package;
mod resources;
mod secrets;
mod security;
mod systemd;
mod upgrade;
mod whatif;
