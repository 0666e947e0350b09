//! One test binary (one link) for every end-to-end test.
#![allow(clippy::disallowed_methods)] // tests against the real server read the wall clock
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod activity;
mod api;
mod audit;
mod crash;
mod deploy;
mod doors;
mod faults;
mod genesys;
mod ha;
mod lifecycle;
mod notify;
mod openapi;
mod ops;
mod reconcile;
mod security;
mod slack;
mod soc;
mod store;
mod tickets;
mod web;
