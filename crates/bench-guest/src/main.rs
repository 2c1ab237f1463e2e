//! `bench-guest`: reads a [`bench_guest::Request`] as JSON on stdin, times each operation and
//! prints the [`bench_guest::Timing`]s as JSON on stdout. Built for `wasm32-wasip2` by
//! `cargo xtask build` and run by `health-bench` in wasmtime; it runs natively too.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("bench-guest: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    let request: bench_guest::Request = match serde_json::from_str(&input) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("bench-guest: stdin is not a benchmark request: {e}");
            return ExitCode::FAILURE;
        }
    };
    match bench_guest::run_request(&request).map(|timings| serde_json::to_string(&timings)) {
        Ok(Ok(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("bench-guest: encoding the timings: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
