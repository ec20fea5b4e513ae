//! The body of a management call, read whole under a small cap. Every body is read here
//! (`POST /auths` by its handler; the denylist's and maintenance's by the router, which
//! hands `guard_api.rs` the bytes), so the cap and its error are one. It is a leaf of its own
//! so that the router and the handlers share it without importing each other.

use bytes::Bytes;
use cliproxy_core::ErrorCode;
use http_body_util::{BodyExt, Limited};

use crate::error::ApiError;

/// The largest management request body.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads a management request body, at most [`MAX_BODY_BYTES`].
pub(super) async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("a management request body is at most {MAX_BODY_BYTES} bytes"),
        )),
        Err(_) => Err(ApiError::new(ErrorCode::BadRequest, "the request body could not be read")),
    }
}
