//! The `patient` role service (private: reachable only as `patient.spin.internal`). Serves a
//! patient's own record after checking the gateway's caller context and asking the composed
//! policy with the record's owner; another patient's record is refused.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use health_spin::service::{self, Refusal};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

#[derive(Debug, PartialEq, Eq)]
enum Api<'a> {
    ReadRecord(&'a str),
}

fn parse<'a>(method: &Method, path: &'a str) -> Option<Api<'a>> {
    match (method, health_spin::segments(path).as_slice()) {
        (Method::Get, ["patients", id, "record"]) => Some(Api::ReadRecord(id)),
        _ => None,
    }
}

#[http_component]
fn handle(req: Request) -> Response {
    service::serve(&req, |caller| match parse(req.method(), req.path()) {
        Some(Api::ReadRecord(id)) => service::read_record(caller, id),
        None => Ok(Err(Refusal::NotFound("no_such_route"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_record_reads() {
        assert_eq!(parse(&Method::Get, "/patients/p-1001/record"), Some(Api::ReadRecord("p-1001")));
        assert_eq!(parse(&Method::Put, "/patients/p-1001/record"), None);
        assert_eq!(parse(&Method::Get, "/patients/p-1001"), None);
    }
}
