//! The member epoch of a group member under Kafka 4's consumer protocol (KIP-848), which
//! the rdkafka crate does not expose: librdkafka keeps it as the group's generation. Read
//! through librdkafka's C API, one of the two modules of the crate with `unsafe` code (with
//! the headers); each block says why it is sound.
#![allow(unsafe_code)]

use rdkafka::bindings::{
    rd_kafka_consumer_group_metadata, rd_kafka_consumer_group_metadata_destroy,
    rd_kafka_consumer_group_metadata_generation_id,
};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// The member's epoch: above 0 once the group coordinator accepted the member (its first
/// heartbeat answered), 0 or below before that or after it left.
pub(super) fn member_epoch<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> i32 {
    // SAFETY: the client pointer is live while `consumer` is borrowed; librdkafka returns a
    // new metadata object (or null for a client that is not a consumer), which is read and
    // destroyed here and never escapes.
    unsafe {
        let metadata = rd_kafka_consumer_group_metadata(consumer.client().native_ptr());
        if metadata.is_null() {
            return 0;
        }
        let epoch = rd_kafka_consumer_group_metadata_generation_id(metadata);
        rd_kafka_consumer_group_metadata_destroy(metadata);
        epoch
    }
}
