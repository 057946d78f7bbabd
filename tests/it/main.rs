//! Integration tests: the real binary against a fake OpenRouter-compatible server on
//! 127.0.0.1, with a cleared environment and temporary HOME and XDG folders.

#[path = "../support/fake.rs"]
mod fake;

mod harness;

mod ask;
mod batch;
mod capabilities;
mod catalog;
mod cli;
mod failures;
mod first_use;
mod fuzz;
mod generated;
mod hardening;
mod harness_checks;
mod latency;
mod memory;
mod network;
mod providers;
mod real_llama;
mod redis;
mod regressions;
mod serve;
mod serve_sdk;
