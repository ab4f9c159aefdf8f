//! The gRPC health checking protocol (`grpc.health.v1.Health/Check`), as much of it as a
//! check needs: the request message in its gRPC frame, and the serving status read back
//! from the response's frames.
//!
//! The two messages have one field each, so they are encoded by hand rather than with a
//! protobuf code generator and its build step:
//!
//! * `HealthCheckRequest { string service = 1; }`
//! * `HealthCheckResponse { ServingStatus status = 1; }` with UNKNOWN = 0, SERVING = 1,
//!   NOT_SERVING = 2, SERVICE_UNKNOWN = 3.
//!
//! A gRPC message travels in a frame: one byte saying whether it is compressed, four
//! bytes of length (big-endian), then the message.

use std::fmt;

/// The method's path.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.status`, with the values the protocol defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingStatus {
    Unknown,
    Serving,
    NotServing,
    ServiceUnknown,
    /// A value this version of the protocol does not define.
    Other(u64),
}

impl ServingStatus {
    fn from_wire(value: u64) -> ServingStatus {
        match value {
            0 => ServingStatus::Unknown,
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            3 => ServingStatus::ServiceUnknown,
            n => ServingStatus::Other(n),
        }
    }
}

impl fmt::Display for ServingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServingStatus::Unknown => f.write_str("UNKNOWN"),
            ServingStatus::Serving => f.write_str("SERVING"),
            ServingStatus::NotServing => f.write_str("NOT_SERVING"),
            ServingStatus::ServiceUnknown => f.write_str("SERVICE_UNKNOWN"),
            ServingStatus::Other(n) => write!(f, "status {n}"),
        }
    }
}

/// Why a response body says nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the response has no message")]
    NoMessage,
    #[error("the response has {0} bytes after its message")]
    TrailingBytes(usize),
    #[error("the response's frame is cut short")]
    Truncated,
    #[error("the response is compressed, which the check did not ask for")]
    Compressed,
    #[error("the response is not a HealthCheckResponse: {0}")]
    Malformed(&'static str),
}

/// The body of a `Check` call for `service` (empty: the server as a whole): the
/// request message in one uncompressed frame.
pub fn encode_request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 6);
    // proto3 leaves out a field with its default value: an empty name is no field.
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0); // not compressed
    // A health check's service name is short; a name beyond 4 GiB cannot be sent at all.
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// The serving status in a `Check` response body: exactly one frame holding a
/// `HealthCheckResponse`.
pub fn decode_response(body: &[u8]) -> Result<ServingStatus, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::NoMessage);
    }
    let (flag, rest) = body.split_first().ok_or(DecodeError::Truncated)?;
    if rest.len() < 4 {
        return Err(DecodeError::Truncated);
    }
    let (length, rest) = rest.split_at(4);
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    if *flag != 0 {
        return Err(DecodeError::Compressed);
    }
    if rest.len() < length {
        return Err(DecodeError::Truncated);
    }
    let (message, after) = rest.split_at(length);
    if !after.is_empty() {
        return Err(DecodeError::TrailingBytes(after.len()));
    }
    decode_message(message)
}

/// `HealthCheckResponse.status`; fields it does not know are skipped, as protobuf
/// readers do, and the last `status` wins.
fn decode_message(mut message: &[u8]) -> Result<ServingStatus, DecodeError> {
    let mut status = 0;
    while !message.is_empty() {
        let key = take_varint(&mut message)?;
        let (field, wire_type) = (key >> 3, key & 7);
        match (field, wire_type) {
            (1, 0) => status = take_varint(&mut message)?,
            (1, _) => return Err(DecodeError::Malformed("field 1 is not a varint")),
            (_, 0) => {
                take_varint(&mut message)?;
            }
            (_, 1) => skip(&mut message, 8)?,
            (_, 2) => {
                let n = take_varint(&mut message)?;
                skip(&mut message, usize::try_from(n).unwrap_or(usize::MAX))?;
            }
            (_, 5) => skip(&mut message, 4)?,
            _ => return Err(DecodeError::Malformed("unknown wire type")),
        }
    }
    Ok(ServingStatus::from_wire(status))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(((value as u8) & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = input
            .split_first()
            .ok_or(DecodeError::Malformed("a varint is cut short"))?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed("a varint is longer than 10 bytes"))
}

fn skip(input: &mut &[u8], n: usize) -> Result<(), DecodeError> {
    if input.len() < n {
        return Err(DecodeError::Malformed("a field is cut short"));
    }
    *input = &input[n..];
    Ok(())
}

/// The name of a gRPC status code, for messages.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "an unknown code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_frame_with_the_service_name() {
        // The server as a whole: an empty message.
        assert_eq!(encode_request(""), [0, 0, 0, 0, 0]);
        assert_eq!(
            encode_request("foo"),
            [0, 0, 0, 0, 5, 0x0a, 3, b'f', b'o', b'o']
        );
        // A name of 200 bytes takes a two-byte length.
        let long = "s".repeat(200);
        let frame = encode_request(&long);
        assert_eq!(&frame[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
        assert_eq!(frame.len(), 5 + 203);
    }

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn responses_give_their_status() {
        assert_eq!(
            decode_response(&frame(&[0x08, 1])),
            Ok(ServingStatus::Serving)
        );
        assert_eq!(
            decode_response(&frame(&[0x08, 2])),
            Ok(ServingStatus::NotServing)
        );
        assert_eq!(
            decode_response(&frame(&[0x08, 3])),
            Ok(ServingStatus::ServiceUnknown)
        );
        // proto3: an absent status is UNKNOWN.
        assert_eq!(decode_response(&frame(&[])), Ok(ServingStatus::Unknown));
        assert_eq!(
            decode_response(&frame(&[0x08, 0x96, 0x01])),
            Ok(ServingStatus::Other(150))
        );
        // Unknown fields of every wire type are skipped.
        let message = [
            0x10, 0x05, // field 2, varint
            0x19, 1, 2, 3, 4, 5, 6, 7, 8, // field 3, 64-bit
            0x22, 2, b'h', b'i', // field 4, bytes
            0x2d, 1, 2, 3, 4, // field 5, 32-bit
            0x08, 1, // status
        ];
        assert_eq!(
            decode_response(&frame(&message)),
            Ok(ServingStatus::Serving)
        );
    }

    #[test]
    fn broken_responses_are_errors() {
        assert_eq!(decode_response(&[]), Err(DecodeError::NoMessage));
        assert_eq!(decode_response(&[0, 0, 0]), Err(DecodeError::Truncated));
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 2, 0x08]),
            Err(DecodeError::Truncated)
        );
        let mut two = frame(&[0x08, 1]);
        two.extend(frame(&[0x08, 1]));
        assert_eq!(decode_response(&two), Err(DecodeError::TrailingBytes(7)));
        let mut compressed = frame(&[0x08, 1]);
        compressed[0] = 1;
        assert_eq!(decode_response(&compressed), Err(DecodeError::Compressed));
        for bad in [
            &[0x0a, 1, 1][..],    // status as bytes
            &[0x08][..],          // a varint missing
            &[0x08, 0x80][..],    // a varint cut short
            &[0x22, 5, b'h'][..], // bytes cut short
            &[0x0b][..],          // wire type 3 (groups)
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
        ] {
            assert!(
                matches!(decode_response(&frame(bad)), Err(DecodeError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn status_codes_have_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(14), "UNAVAILABLE");
        assert_eq!(code_name(99), "an unknown code");
    }
}
