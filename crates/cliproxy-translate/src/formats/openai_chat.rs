//! PLACEHOLDER on the base branch: the helper owning this format replaces this file.

use crate::Format;
use crate::codec::{Codec, StreamDecoder, StreamEncoder};
use crate::error::{Error, Result};
use crate::ir::{ApiError, Request, Response};

/// The codec of [`Format::OpenAiChat`].
#[derive(Debug)]
pub(crate) struct OpenAiChat;

impl Codec for OpenAiChat {
    fn decode_request(_body: &[u8]) -> Result<Request> {
        Err(Error::unsupported("request", Format::OpenAiChat))
    }
    fn encode_request(_request: &Request) -> Result<Vec<u8>> {
        Err(Error::unsupported("request", Format::OpenAiChat))
    }
    fn decode_response(_body: &[u8]) -> Result<Response> {
        Err(Error::unsupported("response", Format::OpenAiChat))
    }
    fn encode_response(_response: &Response) -> Result<Vec<u8>> {
        Err(Error::unsupported("response", Format::OpenAiChat))
    }
    fn decode_error(status: u16, body: &[u8]) -> ApiError {
        ApiError {
            status,
            kind: crate::ir::ErrorKind::from_status(status),
            message: String::from_utf8_lossy(body).into_owned(),
        }
    }
    fn encode_error(error: &ApiError) -> Vec<u8> {
        error.message.clone().into_bytes()
    }
    fn stream_decoder() -> Box<dyn StreamDecoder> {
        unimplemented!()
    }
    fn stream_encoder() -> Box<dyn StreamEncoder> {
        unimplemented!()
    }
}
