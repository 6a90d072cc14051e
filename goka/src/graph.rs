//! The group graph: what a processor group consumes, joins, looks up, emits, loops back and
//! persists (goka's `GroupGraph`).
//!
//! The processor macro builds one as a `const` from the attributes, so the value is
//! inspectable at run time and is the same one the runtime validates before it starts.
//! Hand-written processors declare it the same way.

use std::fmt;

/// Suffix of a group's table topic: `<group>-table`.
pub const TABLE_SUFFIX: &str = "-table";
/// Suffix of a group's loop topic: `<group>-loop`.
pub const LOOP_SUFFIX: &str = "-loop";

/// What an edge does with its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// Consumed with a handler (goka's `Input`).
    Input,
    /// A co-partitioned table read at the message's key (goka's `Join`).
    Join,
    /// A table read at any key through a view (goka's `Lookup`).
    Lookup,
    /// A stream emitted to (goka's `Output`).
    Output,
    /// The group's loop topic (goka's `Loop`).
    Loop,
    /// The group table (goka's `Persist`).
    Persist,
    /// A windowed table of the group (`#[window]`), kept like the group table in the
    /// changelog `<group>-<window>-window`.
    Window,
    /// The group's timers (`#[timer]`), kept in the changelog `<group>-timers`.
    Timer,
}

/// One edge of the graph: a topic and how its keys and values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Edge {
    /// What the edge does.
    pub kind: EdgeKind,
    /// The topic name.
    pub topic: &'static str,
    /// Name of the key codec ([`Codec::NAME`](crate::codec::Codec::NAME)).
    pub key_codec: &'static str,
    /// Name of the value codec.
    pub value_codec: &'static str,
}

impl Edge {
    /// An edge of `kind` on `topic`, whose keys and values the codecs named `key_codec` and
    /// `value_codec` encode.
    pub const fn new(
        kind: EdgeKind,
        topic: &'static str,
        key_codec: &'static str,
        value_codec: &'static str,
    ) -> Self {
        Self {
            kind,
            topic,
            key_codec,
            value_codec,
        }
    }
}

/// A windowed table of the group: its changelog edge and the window's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowEdge {
    /// The changelog, [`EdgeKind::Window`] on `<group>-<name>-window`.
    pub edge: Edge,
    /// The window's name ([`Window::NAME`](crate::window::Window::NAME)).
    pub name: &'static str,
    /// Size, hop, grace and retention.
    pub spec: crate::window::WindowSpec,
    /// Whether a handler gets each window's final value when it closes.
    pub on_close: bool,
}

impl WindowEdge {
    /// The window table's changelog topic.
    pub const fn topic(&self) -> &'static str {
        self.edge.topic
    }
}

/// Suffix of a window's changelog topic: `<group>-<window>-window`.
pub const WINDOW_SUFFIX: &str = "-window";

/// The graph of a processor group. Built as a `const`; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupGraph {
    /// The group name: consumer group id and prefix of the table and loop topics.
    pub group: &'static str,
    /// Consumed streams, each with a handler.
    pub inputs: &'static [Edge],
    /// Joined tables.
    pub joins: &'static [Edge],
    /// Looked-up tables.
    pub lookups: &'static [Edge],
    /// Streams emitted to.
    pub outputs: &'static [Edge],
    /// The loop topic, if the group loops back.
    pub loopback: Option<Edge>,
    /// The group table, if the group persists state.
    pub table: Option<Edge>,
    /// The group's windowed tables.
    pub windows: &'static [WindowEdge],
    /// The changelog of the group's timers, if it declares any.
    pub timers: Option<Edge>,
    /// The names of the group's timers ([`Timer::NAME`](crate::timer::Timer::NAME)).
    pub timer_names: &'static [&'static str],
    /// What follows the group name in its table topic: `-table` (goka's default; goka's
    /// `SetTableSuffix` changes it for a whole program, `#[processor(table_suffix = ...)]`
    /// for one group).
    pub table_suffix: &'static str,
    /// What follows the group name in its loop topic: `-loop` (goka's `SetLoopSuffix`).
    pub loop_suffix: &'static str,
}

/// The first rule of goka's a graph breaks, as [`GroupGraph::violation`] finds it: the same
/// check serves [`GroupGraph::validate`] at run time and the processor macro's check at
/// compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The group name is empty or has characters Kafka does not allow in topic names.
    InvalidGroup,
    /// No input stream.
    NoInput,
    /// An edge list holds an edge of another kind.
    MislabeledEdge {
        /// The topic.
        topic: &'static str,
        /// The list it is in.
        listed: EdgeKind,
        /// The kind it carries.
        kind: EdgeKind,
    },
    /// The table, loop or a window edge does not carry the group's topic name.
    WrongName {
        /// [`EdgeKind::Persist`], [`EdgeKind::Loop`] or [`EdgeKind::Window`].
        own: EdgeKind,
        /// What the edge had.
        actual: &'static str,
    },
    /// An edge other than the table's or the loop's uses the group's table or loop topic.
    OwnTopic {
        /// [`EdgeKind::Persist`] or [`EdgeKind::Loop`]: whose topic it is.
        own: EdgeKind,
        /// The topic.
        topic: &'static str,
        /// The offending edge.
        kind: EdgeKind,
    },
    /// A topic appears on two edges.
    DuplicateTopic {
        /// The topic.
        topic: &'static str,
        /// Its first use.
        first: EdgeKind,
        /// Its second use.
        second: EdgeKind,
    },
}

/// Why a group graph is invalid (goka's `GroupGraph.Validate` rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The group name is empty or has characters Kafka does not allow in topic names.
    #[error("group name {0:?} is invalid: use 1 to 240 characters of [a-zA-Z0-9._-]")]
    InvalidGroup(String),
    /// No input stream.
    #[error("group {group:?} has no input: declare at least one input stream")]
    NoInput {
        /// The group.
        group: String,
    },
    /// A topic appears on two edges.
    #[error("group {group:?} uses topic {topic:?} twice (as {first:?} and as {second:?})")]
    DuplicateTopic {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// Its first use.
        first: EdgeKind,
        /// Its second use.
        second: EdgeKind,
    },
    /// An edge uses the group's own table or loop topic.
    #[error("group {group:?} uses its own {what} topic {topic:?} as {kind:?}; only the runtime may use it")]
    OwnTopic {
        /// The group.
        group: String,
        /// `"table"` or `"loop"`.
        what: &'static str,
        /// The topic.
        topic: String,
        /// The offending edge.
        kind: EdgeKind,
    },
    /// The table or loop edge does not carry the group's topic name.
    #[error("group {group:?}: the {what} topic must be named {expected:?}, not {actual:?}")]
    WrongName {
        /// The group.
        group: String,
        /// `"table"` or `"loop"`.
        what: &'static str,
        /// `<group>-table` or `<group>-loop`.
        expected: String,
        /// What the edge had.
        actual: String,
    },
    /// An edge list holds an edge of another kind.
    #[error("group {group:?}: topic {topic:?} is listed as {listed:?} but its edge says {kind:?}")]
    MislabeledEdge {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The list it is in.
        listed: EdgeKind,
        /// The kind it carries.
        kind: EdgeKind,
    },
}

impl GroupGraph {
    /// A graph of `group` without edges, to fill with struct update syntax:
    /// `GroupGraph { inputs: &[...], ..GroupGraph::new("clicks") }`.
    pub const fn new(group: &'static str) -> Self {
        Self {
            group,
            inputs: &[],
            joins: &[],
            lookups: &[],
            outputs: &[],
            loopback: None,
            table: None,
            windows: &[],
            timers: None,
            timer_names: &[],
            table_suffix: TABLE_SUFFIX,
            loop_suffix: LOOP_SUFFIX,
        }
    }

    /// The group table topic: `<group>-table`, or with the group's own suffix.
    pub fn table_topic(&self) -> String {
        format!("{}{}", self.group, self.table_suffix)
    }

    /// The loop topic: `<group>-loop`, or with the group's own suffix.
    pub fn loop_topic(&self) -> String {
        format!("{}{}", self.group, self.loop_suffix)
    }

    /// Every edge, inputs first.
    pub fn edges(&self) -> impl Iterator<Item = Edge> + '_ {
        self.inputs
            .iter()
            .chain(self.joins)
            .chain(self.lookups)
            .chain(self.outputs)
            .copied()
            .chain(self.loopback)
            .chain(self.table)
            .chain(self.timers)
            .chain(self.windows.iter().map(|w| w.edge))
    }

    /// Topics consumed by the group's partition tasks: inputs and the loop topic.
    pub fn consumed_topics(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.inputs
            .iter()
            .map(|e| e.topic)
            .chain(self.loopback.map(|e| e.topic))
    }

    /// The tables the group's partitions alone write, each kept in a changelog of its own:
    /// the group table, then each window table, then the timers. Everything that treats
    /// them alike (topic creation, recovery, hot standby, the tester) iterates this list, so
    /// a new kind of owned table is added here.
    pub fn owned_tables(&self) -> impl Iterator<Item = &Edge> + '_ {
        self.table
            .iter()
            .chain(self.windows.iter().map(|w| &w.edge))
            .chain(self.timers.iter())
    }

    /// Topics that must have the same partition count: inputs, loop, joins and the tables
    /// the group owns.
    pub fn copartitioned_topics(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.consumed_topics()
            .chain(self.joins.iter().map(|e| e.topic))
            .chain(self.owned_tables().map(|e| e.topic))
    }

    /// The changelog topic of the window `name`: `<group>-<name>-window`.
    pub fn window_topic(&self, name: &str) -> String {
        format!("{}-{name}{WINDOW_SUFFIX}", self.group)
    }

    /// The window edge whose changelog is `topic`.
    pub fn window(&self, topic: &str) -> Option<&'static WindowEdge> {
        self.windows.iter().find(|w| w.edge.topic == topic)
    }

    /// Checks goka's rules (see [`violation`](Self::violation)).
    pub fn validate(&self) -> Result<(), GraphError> {
        let Some(violation) = self.violation() else {
            return Ok(());
        };
        let group = self.group.to_owned();
        let own_name = |own| match own {
            EdgeKind::Loop => ("loop", self.loop_topic()),
            EdgeKind::Timer => (
                "timers",
                format!("{}{}", self.group, crate::timer::TIMERS_SUFFIX),
            ),
            _ => ("table", self.table_topic()),
        };
        Err(match violation {
            Violation::InvalidGroup => GraphError::InvalidGroup(group),
            Violation::NoInput => GraphError::NoInput { group },
            Violation::MislabeledEdge {
                topic,
                listed,
                kind,
            } => GraphError::MislabeledEdge {
                group,
                topic: topic.to_owned(),
                listed,
                kind,
            },
            Violation::WrongName { own, actual } => {
                let (what, expected) = match self.windows.iter().find(|w| w.edge.topic == actual) {
                    Some(window) if own == EdgeKind::Window => {
                        ("window", self.window_topic(window.name))
                    }
                    _ => own_name(own),
                };
                GraphError::WrongName {
                    group,
                    what,
                    expected,
                    actual: actual.to_owned(),
                }
            }
            Violation::OwnTopic { own, topic, kind } => GraphError::OwnTopic {
                group,
                what: own_name(own).0,
                topic: topic.to_owned(),
                kind,
            },
            Violation::DuplicateTopic {
                topic,
                first,
                second,
            } => GraphError::DuplicateTopic {
                group,
                topic: topic.to_owned(),
                first,
                second,
            },
        })
    }

    /// The first of goka's rules the graph breaks, in this order: a valid group name, at
    /// least one input, every edge in the list of its kind, the table and loop edges named
    /// `<group>-table` and `<group>-loop`, those topics used by no other edge, and no topic
    /// on two edges. A `const fn`, so the processor macro checks the graph it generates at
    /// compile time with this same code.
    pub const fn violation(&self) -> Option<Violation> {
        if !valid_group_name(self.group) {
            return Some(Violation::InvalidGroup);
        }
        if self.inputs.is_empty() {
            return Some(Violation::NoInput);
        }
        let count = self.edge_count();
        let mut i = 0;
        while i < count {
            let (listed, edge) = self.edge_at(i);
            if !kind_eq(listed, edge.kind) {
                return Some(Violation::MislabeledEdge {
                    topic: edge.topic,
                    listed,
                    kind: edge.kind,
                });
            }
            i += 1;
        }
        let owns = [
            (EdgeKind::Persist, self.table, self.table_suffix),
            (EdgeKind::Loop, self.loopback, self.loop_suffix),
            (EdgeKind::Timer, self.timers, crate::timer::TIMERS_SUFFIX),
        ];
        let mut o = 0;
        while o < owns.len() {
            let (own, edge, suffix) = owns[o];
            if let Some(edge) = edge {
                if !is_own(self.group, edge.topic, suffix) {
                    return Some(Violation::WrongName {
                        own,
                        actual: edge.topic,
                    });
                }
            }
            let mut i = 0;
            while i < count {
                let (_, edge) = self.edge_at(i);
                if is_own(self.group, edge.topic, suffix) && !kind_eq(edge.kind, own) {
                    return Some(Violation::OwnTopic {
                        own,
                        topic: edge.topic,
                        kind: edge.kind,
                    });
                }
                i += 1;
            }
            o += 1;
        }
        let mut w = 0;
        while w < self.windows.len() {
            let window = self.windows[w];
            if !is_window_topic(self.group, window.name, window.edge.topic) {
                return Some(Violation::WrongName {
                    own: EdgeKind::Window,
                    actual: window.edge.topic,
                });
            }
            w += 1;
        }
        let mut i = 0;
        while i < count {
            let (_, first) = self.edge_at(i);
            let mut j = i + 1;
            while j < count {
                let (_, second) = self.edge_at(j);
                if str_eq(first.topic, second.topic) {
                    return Some(Violation::DuplicateTopic {
                        topic: first.topic,
                        first: first.kind,
                        second: second.kind,
                    });
                }
                j += 1;
            }
            i += 1;
        }
        None
    }

    /// How many edges [`edge_at`](Self::edge_at) counts.
    const fn edge_count(&self) -> usize {
        self.inputs.len()
            + self.joins.len()
            + self.lookups.len()
            + self.outputs.len()
            + self.loopback.is_some() as usize
            + self.table.is_some() as usize
            + self.timers.is_some() as usize
            + self.windows.len()
    }

    /// The `index`-th edge in the order of [`edges`](Self::edges), with the kind of the list
    /// it is in.
    const fn edge_at(&self, index: usize) -> (EdgeKind, Edge) {
        let lists = [
            (EdgeKind::Input, self.inputs),
            (EdgeKind::Join, self.joins),
            (EdgeKind::Lookup, self.lookups),
            (EdgeKind::Output, self.outputs),
        ];
        let mut rest = index;
        let mut l = 0;
        while l < lists.len() {
            if rest < lists[l].1.len() {
                return (lists[l].0, lists[l].1[rest]);
            }
            rest -= lists[l].1.len();
            l += 1;
        }
        if let Some(edge) = self.loopback {
            if rest == 0 {
                return (EdgeKind::Loop, edge);
            }
            rest -= 1;
        }
        if let Some(edge) = self.table {
            if rest == 0 {
                return (EdgeKind::Persist, edge);
            }
            rest -= 1;
        }
        if let Some(edge) = self.timers {
            if rest == 0 {
                return (EdgeKind::Timer, edge);
            }
            rest -= 1;
        }
        (EdgeKind::Window, self.windows[rest].edge)
    }
}

/// `a == b` for edge kinds, in a `const fn`.
const fn kind_eq(a: EdgeKind, b: EdgeKind) -> bool {
    a as u8 == b as u8
}

/// Whether `topic` is `group` followed by `suffix`.
const fn is_own(group: &str, topic: &str, suffix: &str) -> bool {
    let (g, t, s) = (group.as_bytes(), topic.as_bytes(), suffix.as_bytes());
    if t.len() != g.len() + s.len() {
        return false;
    }
    let (head, tail) = t.split_at(g.len());
    bytes_eq(head, g) && bytes_eq(tail, s)
}

/// Whether `topic` is `<group>-<name>-window`.
const fn is_window_topic(group: &str, name: &str, topic: &str) -> bool {
    let (g, n, t) = (group.as_bytes(), name.as_bytes(), topic.as_bytes());
    let suffix = WINDOW_SUFFIX.as_bytes();
    if t.len() != g.len() + 1 + n.len() + suffix.len() {
        return false;
    }
    let (head, rest) = t.split_at(g.len());
    let (dash, rest) = rest.split_at(1);
    let (middle, tail) = rest.split_at(n.len());
    bytes_eq(head, g) && dash[0] == b'-' && bytes_eq(middle, n) && bytes_eq(tail, suffix)
}

/// `a == b` for strings, in a `const fn`.
pub(crate) const fn str_eq(a: &str, b: &str) -> bool {
    bytes_eq(a.as_bytes(), b.as_bytes())
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Kafka topic names allow `[a-zA-Z0-9._-]`, at most 249 characters; the group name gets a
/// suffix of up to 6, and group ids have no tighter rule.
pub const fn valid_group_name(group: &str) -> bool {
    let bytes = group.as_bytes();
    if bytes.is_empty() || bytes.len() > 240 {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return false;
        }
        i += 1;
    }
    true
}

impl fmt::Display for GroupGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {}:", self.group)?;
        for edge in self.edges() {
            write!(f, " {:?}({})", edge.kind, edge.topic)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn edge(kind: EdgeKind, topic: &'static str) -> Edge {
        Edge {
            kind,
            topic,
            key_codec: "string",
            value_codec: "json",
        }
    }

    const CLICKS: GroupGraph = GroupGraph {
        inputs: &[edge(EdgeKind::Input, "user-clicks")],
        joins: &[edge(EdgeKind::Join, "profiles")],
        lookups: &[edge(EdgeKind::Lookup, "countries")],
        outputs: &[edge(EdgeKind::Output, "alerts")],
        loopback: Some(edge(EdgeKind::Loop, "clicks-loop")),
        table: Some(edge(EdgeKind::Persist, "clicks-table")),
        ..GroupGraph::new("clicks")
    };

    // The rules run at compile time too.
    const _: () = assert!(CLICKS.violation().is_none());
    const _: () = assert!(matches!(
        GroupGraph::new("g").violation(),
        Some(Violation::NoInput)
    ));

    #[test]
    fn a_complete_graph_is_valid_and_names_its_topics() {
        CLICKS.validate().unwrap();
        assert_eq!(CLICKS.table_topic(), "clicks-table");
        assert_eq!(CLICKS.loop_topic(), "clicks-loop");
        assert_eq!(
            CLICKS.consumed_topics().collect::<Vec<_>>(),
            ["user-clicks", "clicks-loop"]
        );
        assert_eq!(
            CLICKS.copartitioned_topics().collect::<Vec<_>>(),
            ["user-clicks", "clicks-loop", "profiles", "clicks-table"]
        );
        assert_eq!(CLICKS.edges().count(), 6);
        assert!(CLICKS.to_string().contains("Join(profiles)"));
    }

    #[test]
    fn goka_rules_are_enforced() {
        let no_input = GroupGraph {
            inputs: &[],
            ..CLICKS
        };
        assert!(matches!(
            no_input.validate(),
            Err(GraphError::NoInput { .. })
        ));

        let twice = GroupGraph {
            joins: const { &[edge(EdgeKind::Join, "user-clicks")] },
            ..CLICKS
        };
        let err = twice.validate().unwrap_err();
        assert!(
            matches!(
                err,
                GraphError::DuplicateTopic {
                    first: EdgeKind::Input,
                    second: EdgeKind::Join,
                    ..
                }
            ),
            "{err}"
        );

        let emit_own_table = GroupGraph {
            outputs: const { &[edge(EdgeKind::Output, "clicks-table")] },
            ..CLICKS
        };
        let err = emit_own_table.validate().unwrap_err();
        assert!(
            matches!(
                err,
                GraphError::OwnTopic {
                    what: "table",
                    kind: EdgeKind::Output,
                    ..
                }
            ),
            "{err}"
        );

        let consume_loop = GroupGraph {
            inputs: const { &[edge(EdgeKind::Input, "clicks-loop")] },
            loopback: None,
            ..CLICKS
        };
        let err = consume_loop.validate().unwrap_err();
        assert!(
            matches!(err, GraphError::OwnTopic { what: "loop", .. }),
            "{err}"
        );

        let wrong_table = GroupGraph {
            table: Some(edge(EdgeKind::Persist, "counts")),
            ..CLICKS
        };
        assert!(matches!(
            wrong_table.validate(),
            Err(GraphError::WrongName { what: "table", .. })
        ));

        let mislabeled = GroupGraph {
            outputs: const { &[edge(EdgeKind::Input, "alerts")] },
            ..CLICKS
        };
        assert!(matches!(
            mislabeled.validate(),
            Err(GraphError::MislabeledEdge { .. })
        ));

        for bad in ["", "has space", "slash/es", &"x".repeat(241)] {
            let g = GroupGraph {
                group: "placeholder",
                ..CLICKS
            };
            let g = GroupGraph {
                group: Box::leak(bad.to_owned().into_boxed_str()),
                ..g
            };
            assert!(
                matches!(g.validate(), Err(GraphError::InvalidGroup(_))),
                "{bad:?}"
            );
        }
    }

    const PER_MINUTE: WindowEdge = WindowEdge {
        edge: edge(EdgeKind::Window, "clicks-per-minute-window"),
        name: "per-minute",
        spec: crate::window::WindowSpec::tumbling(std::time::Duration::from_secs(60)),
        on_close: true,
    };

    #[test]
    fn window_changelogs_are_named_after_group_and_window_and_copartitioned() {
        let g = GroupGraph {
            windows: const { &[PER_MINUTE] },
            ..CLICKS
        };
        g.validate().unwrap();
        assert_eq!(g.window_topic("per-minute"), "clicks-per-minute-window");
        assert_eq!(g.window("clicks-per-minute-window"), Some(&g.windows[0]));
        assert!(g
            .copartitioned_topics()
            .any(|t| t == "clicks-per-minute-window"));
        assert_eq!(g.edges().count(), 7);

        let misnamed = GroupGraph {
            windows: const {
                &[WindowEdge {
                    edge: edge(EdgeKind::Window, "per-minute"),
                    ..PER_MINUTE
                }]
            },
            ..CLICKS
        };
        let err = misnamed.validate().unwrap_err();
        assert!(
            matches!(&err, GraphError::WrongName { what: "window", expected, .. } if expected == "clicks-per-minute-window"),
            "{err}"
        );

        let emits_it = GroupGraph {
            windows: const { &[PER_MINUTE] },
            outputs: const { &[edge(EdgeKind::Output, "clicks-per-minute-window")] },
            ..CLICKS
        };
        assert!(matches!(
            emits_it.validate(),
            Err(GraphError::DuplicateTopic {
                second: EdgeKind::Window,
                ..
            })
        ));
    }

    #[test]
    fn a_stateless_graph_without_loop_is_valid() {
        let g = GroupGraph {
            inputs: const { &[edge(EdgeKind::Input, "in")] },
            outputs: const { &[edge(EdgeKind::Output, "out")] },
            ..GroupGraph::new("filter")
        };
        g.validate().unwrap();
    }
}
