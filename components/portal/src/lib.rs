//! The `portal` component: the platform's web front end, a single page (`/`) and its assets
//! (`/app/...`: CSS, JavaScript modules, a vendored QR-code encoder), all compiled in with
//! `include_bytes!`. No build step, no CDN, no framework: the browser runs the modules as they
//! are written in `components/portal/assets`.
//!
//! The component holds nothing and calls nothing: the page talks to the platform's own API
//! (`/auth/...`, `/api/...`) from the browser, with the access token in a JavaScript variable
//! only (README, Portal: why never `localStorage`). Its world (`portal` in `wit/health.wit`)
//! imports no store, no variable and no network.
//!
//! Every response carries a strict Content-Security-Policy (scripts and styles from this
//! origin only, nothing inline, no framing, forms and fetches to this origin only), `nosniff`
//! and `no-referrer`. Assets are revalidated on every use (`no-cache` with an `ETag`), so a new
//! deployment is picked up at once and an unchanged asset costs a `304`.

// The Spin SDK macro expands to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::http_component;

/// The policy every response carries: nothing inline, nothing from another origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// One compiled-in file: where it is served, its media type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset { path: "/", content_type: HTML, body: include_bytes!("../assets/index.html") },
    Asset {
        path: "/app/portal.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/portal.css"),
    },
    Asset { path: "/app/main.js", content_type: JS, body: include_bytes!("../assets/main.js") },
    Asset { path: "/app/api.js", content_type: JS, body: include_bytes!("../assets/api.js") },
    Asset { path: "/app/ui.js", content_type: JS, body: include_bytes!("../assets/ui.js") },
    Asset { path: "/app/signin.js", content_type: JS, body: include_bytes!("../assets/signin.js") },
    Asset { path: "/app/views.js", content_type: JS, body: include_bytes!("../assets/views.js") },
    Asset { path: "/app/vendor/qrcode.mjs", content_type: JS, body: include_bytes!("../assets/vendor/qrcode.mjs") },
    Asset {
        path: "/app/vendor/LICENSE-qrcode-generator",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../assets/vendor/LICENSE-qrcode-generator"),
    },
    Asset { path: "/app/favicon.svg", content_type: "image/svg+xml", body: include_bytes!("../assets/favicon.svg") },
];

/// A strong validator for `body`: FNV-1a, 64 bits, quoted. Not a security boundary, only a
/// cache key for bytes fixed at build time.
fn etag(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("\"{hash:016x}\"")
}

/// The answer to `method` on `path` (query already removed): status, extra headers, body.
fn answer(method: &Method, path: &str, if_none_match: Option<&str>) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
    let head = matches!(method, Method::Head);
    if !head && !matches!(method, Method::Get) {
        return (405, vec![("allow", "GET, HEAD".into()), ("cache-control", "no-store".into())], Vec::new());
    }
    // `/app` and `/app/` are the page too, so a bookmark of either works.
    let path = if path == "/app" || path == "/app/" { "/" } else { path };
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        let body = b"Not found\n".to_vec();
        return (
            404,
            vec![("content-type", "text/plain; charset=utf-8".into()), ("cache-control", "no-store".into())],
            body,
        );
    };
    let tag = etag(asset.body);
    let mut headers =
        vec![("content-type", asset.content_type.into()), ("cache-control", "no-cache".into()), ("etag", tag.clone())];
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*")) {
        headers.remove(0);
        return (304, headers, Vec::new());
    }
    (200, headers, if head { Vec::new() } else { asset.body.to_vec() })
}

#[http_component]
fn handle(req: IncomingRequest, out: spin_sdk::http::ResponseOutparam) {
    // Only if the client went away while its answer was being written.
    if let Err(e) = health_spin::respond::try_send(out, serve(req)) {
        eprintln!("the response could not be sent: {e}");
    }
}

fn serve(req: IncomingRequest) -> Response {
    let path_with_query = req.path_with_query().unwrap_or_default();
    let path = path_with_query.split('?').next().unwrap_or_default().to_owned();
    let if_none_match = req
        .headers()
        .get("if-none-match")
        .into_iter()
        .filter_map(|v| String::from_utf8(v).ok())
        .collect::<Vec<_>>()
        .join(",");
    let (status, headers, body) = answer(&req.method(), &path, Some(if_none_match.as_str()).filter(|v| !v.is_empty()));
    let mut response = Response::builder();
    response
        .status(status)
        .header("content-security-policy", CONTENT_SECURITY_POLICY)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("x-frame-options", "DENY")
        .header("cross-origin-opener-policy", "same-origin")
        .header("cross-origin-resource-policy", "same-origin")
        .header("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()");
    for (name, value) in headers {
        response.header(name, value);
    }
    response.body(body).build()
}
