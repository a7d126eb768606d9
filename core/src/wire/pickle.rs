//! (being written)
#![allow(missing_docs, unreachable_pub, clippy::all)]
use super::value::{Limits, Value};
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct PickleError;
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct PickleEncodeError;
pub fn decode(_p: &bytes::Bytes, _l: &Limits) -> Result<Value, PickleError> {
    Err(PickleError)
}
pub fn encode(_v: &Value, _o: &mut Vec<u8>) -> Result<(), PickleEncodeError> {
    Err(PickleEncodeError)
}
