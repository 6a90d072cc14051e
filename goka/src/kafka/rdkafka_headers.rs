//! Message headers between librdkafka and [`Headers`], names as bytes.
//!
//! rdkafka's header API takes and hands out names as `&str` and panics on a consumed name
//! that is not UTF-8, which Kafka allows and Go or Java producers can write: one such
//! message would kill the consumer's thread. So headers go through librdkafka's C API
//! here, one of the two modules of the crate with `unsafe` code (with the member epoch); each
//! block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CStr};
use std::ptr;

use rdkafka::bindings::{
    rd_kafka_header_add, rd_kafka_header_get_all, rd_kafka_headers_t, rd_kafka_message_headers,
};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, OwnedHeaders};
use rdkafka::types::RDKafkaRespErr;

use super::Headers;

/// Calls `each` with every header of `message`, in order; a header without a value has an
/// empty one. Never panics, whatever the bytes.
pub(super) fn for_each<'m>(
    message: &'m BorrowedMessage<'_>,
    mut each: impl FnMut(&'m [u8], &'m [u8]),
) {
    let mut headers: *mut rd_kafka_headers_t = ptr::null_mut();
    // SAFETY: `message.ptr()` is a live message for the borrow's lifetime; librdkafka only
    // writes the pointer to the headers it owns (parsing them on first access).
    let found = unsafe { rd_kafka_message_headers(message.ptr(), &mut headers) };
    if found != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return;
    }
    for index in 0.. {
        let mut name: *const c_char = ptr::null();
        let mut value: *const c_void = ptr::null();
        let mut size = 0usize;
        // SAFETY: `headers` belongs to `message`, alive for this call; librdkafka answers an
        // index past the end with an error and writes nothing then.
        let got =
            unsafe { rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size) };
        if got != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return;
        }
        // SAFETY: librdkafka stores each name NUL-terminated and each value as `size` bytes,
        // both owned by the message and alive as long as it is borrowed (`'m`).
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = if value.is_null() {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }
        };
        each(name, value);
    }
}

/// librdkafka headers to produce with, names written as the bytes they are.
pub(super) fn to_native(headers: &Headers) -> OwnedHeaders {
    let native = OwnedHeaders::new_with_capacity(headers.len());
    // `BorrowedHeaders` is librdkafka's header list seen through a reference: its address is
    // the list's (that is how rdkafka itself hands it out).
    let list = ptr::from_ref::<BorrowedHeaders>(native.as_borrowed())
        .cast_mut()
        .cast::<rd_kafka_headers_t>();
    for (name, value) in headers.iter() {
        // SAFETY: `list` is the writable list `native` owns; librdkafka copies `name` and
        // `value` (lengths given, so names may hold any bytes) before returning. Adding to a
        // list that is not read-only cannot fail.
        unsafe {
            rd_kafka_header_add(
                list,
                name.as_ptr().cast::<c_char>(),
                name.len() as isize,
                value.as_ptr().cast::<c_void>(),
                value.len() as isize,
            );
        }
    }
    native
}
