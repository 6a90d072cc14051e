//! The typed model of an annotated processor struct, filled by `attr.rs`.

use proc_macro2::Span;

/// One `#[processor]` struct and its helper attributes.
pub struct Processor {
    /// The item with the helper attributes removed; re-emitted as it is.
    pub item: syn::Item,
    /// The struct's name.
    pub ident: syn::Ident,
    /// `crate = "..."`, or `::goka`.
    pub krate: syn::Path,
    /// `group = "..."` and where it was written.
    pub group: Option<(String, Span)>,
    /// `group` was given but malformed (and reported).
    pub group_malformed: bool,
    /// An `#[input]` was written but dropped after its error: "no input" would be a second
    /// error for the same mistake.
    pub input_malformed: bool,
    pub nil_handling: Option<NilHandling>,
    pub decode_errors: Option<DecodeErrors>,
    /// `table_suffix = "..."` and `loop_suffix = "..."`, when given.
    pub table_suffix: Option<String>,
    pub loop_suffix: Option<String>,
    pub inputs: Vec<Input>,
    pub persists: Vec<Persist>,
    pub joins: Vec<TopicRef>,
    pub lookups: Vec<TopicRef>,
    pub outputs: Vec<TopicRef>,
    pub loopbacks: Vec<Loopback>,
    pub visits: Vec<Visit>,
    pub windows: Vec<WindowDecl>,
    pub timers: Vec<TimerDecl>,
}

/// `nil_handling = "..."`: what a tombstone on an input does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NilHandling {
    Ignore,
    Process,
    Decode,
    Restore,
}

/// `decode_errors = "..."`: what an input that does not decode does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrors {
    DeadLetter,
    Fail,
    Skip,
}

/// `#[input(topic = T, handler = ...)]` or `#[input(topics = [A, B], handler = ...)]`, with
/// `event_time = ...` for a method that reads the message's event time from its value.
pub struct Input {
    pub topics: Vec<syn::Type>,
    pub handler: syn::Path,
    pub event_time: Option<syn::Path>,
}

/// `#[persist(value = V, codec = C)]`.
pub struct Persist {
    pub value: syn::Type,
    /// `None` when the codec was missing (and reported): the group still has its table, so
    /// handlers that read and write it raise no further errors.
    pub codec: Option<syn::Type>,
    /// The attribute, for "declared twice" errors.
    pub attr: syn::Attribute,
}

/// `#[join(table = T)]`, `#[lookup(table = T)]`, `#[output(topic = T)]`.
pub struct TopicRef {
    pub topic: syn::Type,
}

/// `#[visit(visitor = V, handler = ...)]`.
pub struct Visit {
    pub visitor: syn::Type,
    pub handler: syn::Path,
}

/// `#[window(window = W)]`, or `#[window(window = W, on_close = ...)]`.
pub struct WindowDecl {
    pub window: syn::Type,
    pub on_close: Option<syn::Path>,
}

/// `#[timer(timer = T, handler = ...)]`.
pub struct TimerDecl {
    pub timer: syn::Type,
    pub handler: syn::Path,
}

/// `#[loopback(value = V, codec = C, handler = ...)]`.
pub struct Loopback {
    pub value: syn::Type,
    pub codec: syn::Type,
    pub handler: syn::Path,
    pub attr: syn::Attribute,
}

impl Processor {
    /// Every topic named by an edge, with what the edge does, in declaration order.
    pub fn topic_uses(&self) -> impl Iterator<Item = (&'static str, &syn::Type)> {
        let inputs = self
            .inputs
            .iter()
            .flat_map(|i| i.topics.iter().map(|t| ("input", t)));
        inputs
            .chain(self.joins.iter().map(|j| ("join", &j.topic)))
            .chain(self.lookups.iter().map(|l| ("lookup", &l.topic)))
            .chain(self.outputs.iter().map(|o| ("output", &o.topic)))
    }

    /// The table and loop topic names, derived from the group.
    pub fn table_topic(&self) -> String {
        let suffix = self.table_suffix.as_deref().unwrap_or("-table");
        format!("{}{suffix}", self.group_name())
    }

    pub fn loop_topic(&self) -> String {
        let suffix = self.loop_suffix.as_deref().unwrap_or("-loop");
        format!("{}{suffix}", self.group_name())
    }

    /// The group name, or a placeholder after an error (the expansion goes on so that one
    /// mistake does not cause a flood of others).
    pub fn group_name(&self) -> &str {
        self.group.as_ref().map_or("invalid-group", |(g, _)| g)
    }
}
