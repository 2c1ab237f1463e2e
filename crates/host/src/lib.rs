//! A small host that runs a Spin application (`spin.toml`, manifest v2) the way `spin up` does,
//! built on wasmtime, wasmtime-wasi and wasmtime-wasi-http, because Spin's CLI cannot be
//! installed where this project is built and tested.
//!
//! It implements the HTTP trigger (exact, wildcard and private routes, Spin's request
//! headers), a fresh instance per request, `*.spin.internal` chaining in-process,
//! `allowed_outbound_hosts`, Spin's key-value / SQLite / variables interfaces with per-component
//! label checks, `SPIN_VARIABLE_*` overrides, runtime configuration of store locations,
//! component dependencies composed at load time, and Spin's trace export over OTLP/HTTP for the
//! HTTP trigger's and outbound HTTP's spans (`OTEL_EXPORTER_OTLP_ENDPOINT`). It deliberately does
//! not implement other triggers, Redis/Postgres/MySQL/LLM interfaces, static files or `spin
//! deploy`; see README.md.

mod app;
mod compose;
mod limits;
mod manifest;
mod outbound;
mod routing;
mod runtime_config;
mod serve;
mod spin_api;
mod telemetry;
mod variables;

pub use app::{App, DEFAULT_CLIENT, LoadOptions, RequestRefused, State, engine};
pub use compose::{check_dependency, compose, interfaces};
pub use limits::{DEFAULT_MAX_INSTANCES, Limits};
pub use manifest::Manifest;
pub use serve::serve;
