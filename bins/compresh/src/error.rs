//! The one place where gateway failures become HTTP responses.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, GatewayBody};

/// A failure of the gateway itself (never a provider's own error, which passes through).
///
/// Messages are written for the client: they never contain a key, a provider key or request
/// content. Internal detail goes to the log at the point of failure, not here.
#[derive(Debug, Clone)]
pub struct GatewayError {
    status: StatusCode,
    error_type: &'static str,
    code: &'static str,
    message: String,
}

impl GatewayError {
    /// A failure with an explicit status, type and code.
    pub fn new(
        status: StatusCode,
        error_type: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error_type,
            code,
            message: message.into(),
        }
    }

    /// 401: missing, malformed, unknown, expired or revoked key.
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            code,
            message,
        )
    }

    /// 403: a valid key that may not do this.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", code, message)
    }

    /// 400: the request itself is unusable.
    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// 404 for paths the gateway does not serve.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message,
        )
    }

    /// 500 that exposes nothing; the caller logs the detail.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal_error",
            "internal error in the gateway; the request was not forwarded",
        )
    }

    /// The HTTP status this error is sent with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The JSON body `{"error":{"message","type","code"}}`.
    pub fn body_json(&self) -> String {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
            }
        })
        .to_string()
    }

    /// Render as a response.
    pub fn into_response(self) -> Response<GatewayBody> {
        json_response(self.status, Bytes::from(self.body_json()))
    }
}

impl From<compresh_forward::ForwardError> for GatewayError {
    fn from(error: compresh_forward::ForwardError) -> Self {
        Self::new(
            error.status(),
            error.error_type(),
            error.code(),
            error.message(),
        )
    }
}

/// The one mapping of operation failures (admin API, `GET /v1/usage`) to responses: unknown
/// records are 404, name clashes 409, bad input 400; anything else is a 500 whose detail goes
/// only to the log (store and vault messages name files and versions, never secrets).
impl From<crate::ops::OpsError> for GatewayError {
    fn from(error: crate::ops::OpsError) -> Self {
        use compresh_store::StoreError;

        use crate::ops::OpsError;
        match &error {
            OpsError::Store(StoreError::NotFound { .. }) => Self::not_found(error.to_string()),
            OpsError::Store(StoreError::AlreadyExists { .. }) => Self::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                "already_exists",
                error.to_string(),
            ),
            OpsError::Invalid(_) | OpsError::Store(StoreError::Invalid { .. }) => {
                Self::invalid_request("invalid_request", error.to_string())
            }
            _ => {
                tracing::error!("operation failed: {error}");
                Self::internal()
            }
        }
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<GatewayBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_documented_shape() {
        let error = GatewayError::unauthenticated("invalid_api_key", "unknown API key");
        let value: serde_json::Value = serde_json::from_str(&error.body_json()).unwrap();
        assert_eq!(value["error"]["message"], "unknown API key");
        assert_eq!(value["error"]["type"], "authentication_error");
        assert_eq!(value["error"]["code"], "invalid_api_key");
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn internal_error_reveals_nothing() {
        let body = GatewayError::internal().body_json();
        assert!(body.contains("internal_error"));
        assert!(!body.to_lowercase().contains("sqlite"));
    }
}
