//! Serving an [`App`] over HTTP/1.1 with hyper, as `spin up` does.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use crate::App;

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
                    let response = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
                        Ok(body) => {
                            match app.handle_from(http::Request::from_parts(parts, body.to_bytes()), client).await {
                                Ok(response) => response,
                                Err(e) => {
                                    tracing::error!("request failed: {e:#}");
                                    http::Response::builder()
                                        .status(500)
                                        .body(Bytes::from_static(b"Internal Server Error"))
                                        .unwrap_or_default()
                                }
                            }
                        }
                        Err(_) => http::Response::builder()
                            .status(413)
                            .body(Bytes::from_static(b"Payload Too Large"))
                            .unwrap_or_default(),
                    };
                    Ok::<_, std::convert::Infallible>(response.map(Full::new))
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
