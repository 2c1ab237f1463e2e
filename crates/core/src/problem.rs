//! RFC 9457 problem details. Bodies are generic and stable: the precise reason for a refusal
//! goes to the audit log, never to the client.

use serde::Serialize;

/// Media type of a problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The OAuth 2.0 error code (RFC 6749 §5.2) on token-endpoint problems, an RFC 9457
    /// extension member so OAuth clients find the field they look for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Problem {
    /// A problem of type `https://health-platform.dev/problems/{slug}`.
    pub fn new(slug: &str, title: &str, status: u16) -> Self {
        Self {
            kind: format!("https://health-platform.dev/problems/{slug}"),
            title: title.to_owned(),
            status,
            detail: None,
            error: None,
        }
    }

    /// Adds the OAuth 2.0 `error` code.
    pub fn with_oauth_error(mut self, code: &str) -> Self {
        self.error = Some(code.to_owned());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn unauthorized() -> Self {
        Self::new("invalid-token", "Unauthorized", 401)
    }
    pub fn invalid_credentials() -> Self {
        Self::new("invalid-credentials", "Invalid credentials", 401)
    }
    pub fn forbidden() -> Self {
        Self::new("forbidden", "Forbidden", 403)
    }
    pub fn not_found() -> Self {
        Self::new("not-found", "Not Found", 404)
    }
    pub fn method_not_allowed() -> Self {
        Self::new("method-not-allowed", "Method Not Allowed", 405)
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new("bad-request", "Bad Request", 400).with_detail(detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new("conflict", "Conflict", 409).with_detail(detail)
    }
    pub fn payload_too_large() -> Self {
        Self::new("payload-too-large", "Payload Too Large", 413)
    }
    pub fn unsupported_media_type() -> Self {
        Self::new("unsupported-media-type", "Unsupported Media Type", 415)
    }
    pub fn internal() -> Self {
        Self::new("internal", "Internal Server Error", 500)
    }
    /// A rate limit was reached; `Retry-After` says when to try again.
    pub fn too_many_requests() -> Self {
        Self::new("rate-limited", "Too Many Requests", 429)
            .with_detail("this client made too many requests of this kind; try again after Retry-After seconds")
    }
    pub fn unavailable() -> Self {
        Self::new("unavailable", "Service Unavailable", 503)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_rfc9457_members() {
        let body: serde_json::Value = serde_json::from_slice(&Problem::unauthorized().to_json()).unwrap();
        assert_eq!(body["type"], "https://health-platform.dev/problems/invalid-token");
        assert_eq!(body["status"], 401);
        assert_eq!(body["title"], "Unauthorized");
        assert!(body.get("detail").is_none());
    }
}
