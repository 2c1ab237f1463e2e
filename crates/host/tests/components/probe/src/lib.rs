//! Test guest for the local host. Each path exercises one host interface and reports what the
//! guest saw, so host tests assert on real guest behaviour.

// The Spin SDK macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

/// Counts requests seen by this instance: a fresh instance per request always reports 1.
static SEEN: AtomicU32 = AtomicU32::new(0);

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder().status(status).header("content-type", "text/plain").body(body.into()).build()
}

#[http_component]
async fn handle(req: Request) -> Response {
    let count = SEEN.fetch_add(1, Ordering::SeqCst) + 1;
    // Route on what the host says is below the matched route, as Spin components do.
    let path = req.header("spin-path-info").and_then(|v| v.as_str()).unwrap_or(req.path()).to_owned();
    if path.is_empty() || path == "/" {
        return text(200, spin_sdk::variables::get("name").unwrap_or_default());
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (_, ["hello"]) => text(200, "hello"),
        (_, ["count"]) => text(200, count.to_string()),
        (_, ["headers", ..]) => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .filter(|(k, _)| k.starts_with("spin-"))
                .map(|(k, v)| (k.to_owned(), v.as_str().unwrap_or_default().into()))
                .collect();
            text(200, serde_json::Value::Object(headers).to_string())
        }
        (method, ["kv", label, key]) => match spin_sdk::key_value::Store::open(label) {
            Err(e) => text(500, format!("open: {e:?}")),
            Ok(store) if *method == Method::Put => match store.set(key, req.body()) {
                Ok(()) => text(200, "stored"),
                Err(e) => text(500, format!("set: {e:?}")),
            },
            Ok(store) => match store.get(key) {
                Ok(Some(value)) => text(200, String::from_utf8_lossy(&value)),
                Ok(None) => text(404, "absent"),
                Err(e) => text(500, format!("get: {e:?}")),
            },
        },
        (_, ["sql", label]) => match spin_sdk::sqlite::Connection::open(label) {
            Err(e) => text(500, format!("open: {e:?}")),
            Ok(conn) => match conn.execute(&String::from_utf8_lossy(req.body()), &[]) {
                Ok(result) => {
                    let rows: Vec<String> = result.rows.iter().map(|r| format!("{:?}", r.values)).collect();
                    text(200, rows.join("\n"))
                }
                Err(e) => text(500, format!("execute: {e:?}")),
            },
        },
        (_, ["sql2", label]) => {
            // The body's first statement on one connection, the second on another opened after
            // it while the first is still open: tells a connection per `open` from one per instance.
            let body = String::from_utf8_lossy(req.body()).into_owned();
            let (first, second) = body.split_once("\n---\n").unwrap_or((&body, ""));
            let run = |conn: &spin_sdk::sqlite::Connection, statement: &str| {
                conn.execute(statement, &[])
                    .map(|r| r.rows.iter().map(|r| format!("{:?}", r.values)).collect::<Vec<_>>().join("\n"))
            };
            let a = match spin_sdk::sqlite::Connection::open(label) {
                Ok(a) => a,
                Err(e) => return text(500, format!("open: {e:?}")),
            };
            if let Err(e) = run(&a, first) {
                return text(500, format!("execute: {e:?}"));
            }
            let b = match spin_sdk::sqlite::Connection::open(label) {
                Ok(b) => b,
                Err(e) => return text(500, format!("open: {e:?}")),
            };
            let answer = match run(&b, second) {
                Ok(rows) => text(200, rows),
                Err(e) => text(500, format!("execute: {e:?}")),
            };
            drop(a);
            answer
        }
        (_, ["open-many", kind, label, count]) => {
            // Opens `count` connections or stores and keeps them open; reports the first refusal.
            let count: usize = count.parse().unwrap_or(0);
            let mut connections = Vec::new();
            let mut stores = Vec::new();
            for i in 0..count {
                let refused = match *kind {
                    "sql" => spin_sdk::sqlite::Connection::open(label)
                        .map(|c| connections.push(c))
                        .err()
                        .map(|e| format!("{e:?}")),
                    _ => {
                        spin_sdk::key_value::Store::open(label).map(|s| stores.push(s)).err().map(|e| format!("{e:?}"))
                    }
                };
                if let Some(e) = refused {
                    return text(500, format!("open {}: {e}", i + 1));
                }
            }
            text(200, format!("opened {count}"))
        }
        (_, ["busy", ms]) => {
            // Computes for `ms` milliseconds (reading the clock, never waiting).
            let until = std::time::Instant::now() + std::time::Duration::from_millis(ms.parse().unwrap_or(0));
            let mut spins = 0_u64;
            while std::time::Instant::now() < until {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
            text(200, "done")
        }
        (_, ["loop"]) => {
            // Never returns: only an epoch deadline can stop it.
            let mut spins = 0_u64;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        (_, ["var", name]) => match spin_sdk::variables::get(name) {
            Ok(value) => text(200, value),
            Err(e) => text(500, format!("{e:?}")),
        },
        (_, ["call"]) => {
            let url = req.query().strip_prefix("url=").unwrap_or_default().to_owned();
            // Forward the method, body and x-health-* headers so tests can present a caller
            // context to a chained service.
            let mut outgoing = Request::builder();
            outgoing.method(req.method().clone()).uri(url);
            for (name, value) in req.headers().filter(|(k, _)| k.starts_with("x-health-") || *k == "content-type") {
                outgoing.header(name, value.as_str().unwrap_or_default());
            }
            outgoing.body(req.body().to_vec());
            match spin_sdk::http::send::<_, Response>(outgoing.build()).await {
                Ok(response) => {
                    text(200, format!("{} {}", response.status(), String::from_utf8_lossy(response.body())))
                }
                Err(e) => text(502, format!("send failed: {e:?}")),
            }
        }
        (_, ["authz"]) => {
            use health_spin::authz;
            let caller = health_core::Caller {
                tenant_id: health_core::TenantId::parse("t").unwrap_or_else(|_| unreachable!()),
                subject: health_core::Opaque::parse("u").unwrap_or_else(|_| unreachable!()),
                role: health_core::Role::Admin,
                client_id: health_core::ClientId::parse("c").ok(),
                scopes: vec![],
                jti: health_core::TokenId::parse("j").unwrap_or_else(|_| unreachable!()),
                enc_jwk: None,
            };
            let decision = authz::authorize(
                &authz::caller(&caller),
                authz::Action::ReadAudit,
                &authz::Resource::Tenant("t".into()),
            );
            text(200, format!("{} {} {}", decision.allow, decision.reason, authz::policy_version()))
        }
        _ => text(404, "no such probe"),
    }
}
