//! (being written)
#![allow(missing_docs, unreachable_pub, clippy::all)]
use super::value::{Limits, Value};
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct MsgpackError;
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct MsgpackEncodeError;
pub fn decode(_p: &bytes::Bytes, _l: &Limits) -> Result<Value, MsgpackError> { Err(MsgpackError) }
pub fn encode(_v: &Value, _o: &mut Vec<u8>) -> Result<(), MsgpackEncodeError> { Err(MsgpackEncodeError) }
