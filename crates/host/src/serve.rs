//! Serving an [`App`] over HTTP/1.1 with hyper, as `spin up` does: a component's failure is a
//! 500 with an empty body, and a request Spin refuses before routing it to a component
//! ([`RequestRefused`]: no `Host`, or a `*.spin.internal` one, which Spin strips) gets no
//! answer at all: the service fails, so hyper closes the connection, as Spin's server does.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use crate::App;
use crate::app::{Origin, RequestRefused};

/// Requests larger than this are refused before reaching a component.
const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;

/// Serves `app` over HTTP/1.1 on `listener` until the task is dropped.
pub async fn serve(app: App, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, client) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
                        Ok(body) => body.to_bytes(),
                        Err(_) => return Ok(text(413, "Payload Too Large")),
                    };
                    let request = http::Request::from_parts(parts, body);
                    match app.respond(request, client, Origin::Network).await {
                        Ok(response) => Ok(response.map(Full::new)),
                        Err(e) if e.downcast_ref::<RequestRefused>().is_some() => {
                            tracing::debug!("closing the connection from {client}: {e:#}");
                            Err(e)
                        }
                        Err(e) => {
                            tracing::error!("Error processing request: {e:#}");
                            Ok(text(500, ""))
                        }
                    }
                }
            });
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!("connection from {client}: {e}");
            }
        });
    }
}

fn text(status: u16, body: &'static str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}
