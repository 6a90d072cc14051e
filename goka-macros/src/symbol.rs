//! Every attribute and key name the macro understands, in one place.

use crate::ast::{DecodeErrors, NilHandling};

/// The struct attribute that starts it all: `#[goka::processor(...)]`.
pub const PROCESSOR: &str = "processor";

/// Helper attributes on the struct, below `#[processor]`.
pub const INPUT: &str = "input";
pub const PERSIST: &str = "persist";
pub const JOIN: &str = "join";
pub const LOOKUP: &str = "lookup";
pub const OUTPUT: &str = "output";
pub const LOOPBACK: &str = "loopback";
pub const VISIT: &str = "visit";
pub const WINDOW: &str = "window";
pub const TIMER: &str = "timer";

/// All helper attributes, for "unknown attribute" hints and stripping.
pub const HELPERS: &[&str] = &[
    INPUT, PERSIST, JOIN, LOOKUP, OUTPUT, LOOPBACK, VISIT, WINDOW, TIMER,
];

/// Keys of `#[processor(...)]`.
pub const GROUP: &str = "group";
pub const CRATE: &str = "crate";
pub const NIL_HANDLING: &str = "nil_handling";
pub const DECODE_ERRORS: &str = "decode_errors";
pub const TABLE_SUFFIX: &str = "table_suffix";
pub const LOOP_SUFFIX: &str = "loop_suffix";

/// Keys of the helper attributes.
pub const TOPIC: &str = "topic";
pub const TOPICS: &str = "topics";
pub const TABLE: &str = "table";
pub const HANDLER: &str = "handler";
pub const EVENT_TIME: &str = "event_time";
pub const VISITOR: &str = "visitor";
pub const ON_CLOSE: &str = "on_close";
pub const VALUE: &str = "value";
pub const CODEC: &str = "codec";

/// Values of `nil_handling` and `decode_errors`, the first the default.
pub const NIL_VALUES: &[(&str, NilHandling)] = &[
    ("ignore", NilHandling::Ignore),
    ("process", NilHandling::Process),
    ("decode", NilHandling::Decode),
    ("restore", NilHandling::Restore),
];
pub const DECODE_VALUES: &[(&str, DecodeErrors)] = &[
    ("fail", DecodeErrors::Fail),
    ("skip", DecodeErrors::Skip),
    ("dead-letter", DecodeErrors::DeadLetter),
];

/// The default path of the runtime crate.
pub const DEFAULT_CRATE: &str = "::goka";

/// Group names become topic names (`<group>-table`): Kafka's characters, and room for the
/// suffix.
pub const MAX_GROUP_LEN: usize = 240;
