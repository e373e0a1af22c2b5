//! moltd's integration tests: one binary, one module per area.
//!
//! Every test runs the real `moltd` binary, usually as PID 1 of a fresh PID
//! namespace, in a directory of its own (see [`util::TestDir`]).

mod agent;
mod apply;
mod big_list;
mod cli;
mod container;
mod control;
mod dumb_init;
mod example_app;
mod feed;
mod firstboot;
mod fleet;
mod fleetlock;
mod footprint;
mod held_sockets;
mod honest_config;
mod manifests;
mod observe;
mod overlap;
mod pid1;
mod preflight;
mod production;
mod ready;
mod reexec;
mod release_layouts;
mod requests;
mod rollout;
mod secrets;
mod selfonly;
mod selfrepo;
mod service_signals;
mod services;
mod stage_errors;
mod static_build;
mod sv;
mod tini;
mod update;
mod util;
mod visible;
