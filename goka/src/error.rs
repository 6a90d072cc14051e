//! The error types of each layer, and [`Error`], which any of them converts into.
//!
//! Each layer has its own `thiserror` enum whose messages name what failed (topic, partition,
//! offset, key, path where they apply). Code that spans layers, such as a service's `main`,
//! can return [`Error`] and use `?` on all of them.

pub use crate::codec::CodecError;
pub use crate::emitter::EmitError;
pub use crate::graph::GraphError;
pub use crate::kafka::KafkaError;
pub use crate::processor::ProcessorError;
pub use crate::reader::ReaderError;
pub use crate::storage::StorageError;
pub use crate::topic_manager::TopicManagerError;
pub use crate::view::ViewError;

/// Any error of the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Encoding or decoding a value failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Local storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The Kafka client failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A group graph breaks goka's rules.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Creating or checking topics failed.
    #[error(transparent)]
    Topics(#[from] TopicManagerError),
    /// A processor stopped.
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    /// A view stopped or a read of it failed.
    #[error(transparent)]
    View(#[from] ViewError),
    /// An emit failed.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// Reading a topic back failed.
    #[error(transparent)]
    Read(#[from] ReaderError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_converts_and_keeps_its_message() {
        fn lift<E: Into<Error> + std::fmt::Display>(error: E) -> (String, String) {
            let text = error.to_string();
            (text, error.into().to_string())
        }
        let (inner, outer) = lift(KafkaError::Config("bad".into()));
        assert_eq!(inner, outer);
        let (inner, outer) = lift(GraphError::InvalidGroup("a b".into()));
        assert_eq!(inner, outer);
        let (inner, outer) = lift(ProcessorError::AlreadyRunning { group: "g" });
        assert_eq!(inner, outer);
        let (inner, outer) = lift(ViewError::AlreadyRunning { topic: "t" });
        assert_eq!(inner, outer);
        let (inner, outer) = lift(ReaderError::NoTopic { topic: "t" });
        assert_eq!(inner, outer);
    }
}
