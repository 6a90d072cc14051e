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
    /// The group table topic: `<group>-table`.
    pub fn table_topic(&self) -> String {
        format!("{}{TABLE_SUFFIX}", self.group)
    }

    /// The loop topic: `<group>-loop`.
    pub fn loop_topic(&self) -> String {
        format!("{}{LOOP_SUFFIX}", self.group)
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
    }

    /// Topics consumed by the group's partition tasks: inputs and the loop topic.
    pub fn consumed_topics(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.inputs
            .iter()
            .map(|e| e.topic)
            .chain(self.loopback.map(|e| e.topic))
    }

    /// Topics that must have the same partition count: inputs, loop, joins and the table.
    pub fn copartitioned_topics(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.consumed_topics()
            .chain(self.joins.iter().map(|e| e.topic))
            .chain(self.table.map(|e| e.topic))
    }

    /// Checks goka's rules: a valid group name, at least one input, no topic used twice, the
    /// group's own table and loop topics used only by their own edges and named after the
    /// group. (At most one table and one loop holds by construction.)
    pub fn validate(&self) -> Result<(), GraphError> {
        let group = self.group.to_owned();
        if !valid_group_name(self.group) {
            return Err(GraphError::InvalidGroup(group));
        }
        if self.inputs.is_empty() {
            return Err(GraphError::NoInput { group });
        }
        let lists: [(EdgeKind, &[Edge]); 4] = [
            (EdgeKind::Input, self.inputs),
            (EdgeKind::Join, self.joins),
            (EdgeKind::Lookup, self.lookups),
            (EdgeKind::Output, self.outputs),
        ];
        let singles = [
            (EdgeKind::Loop, self.loopback),
            (EdgeKind::Persist, self.table),
        ];
        let listed = lists
            .iter()
            .flat_map(|(kind, edges)| edges.iter().map(move |e| (*kind, *e)))
            .chain(
                singles
                    .into_iter()
                    .filter_map(|(kind, e)| e.map(|e| (kind, e))),
            );
        for (listed, edge) in listed {
            if edge.kind != listed {
                return Err(GraphError::MislabeledEdge {
                    group,
                    topic: edge.topic.to_owned(),
                    listed,
                    kind: edge.kind,
                });
            }
        }
        for (what, own, edge) in [
            ("table", self.table_topic(), self.table),
            ("loop", self.loop_topic(), self.loopback),
        ] {
            if let Some(edge) = edge {
                if edge.topic != own {
                    return Err(GraphError::WrongName {
                        group,
                        what,
                        expected: own,
                        actual: edge.topic.to_owned(),
                    });
                }
            }
            let own_kind = if what == "table" {
                EdgeKind::Persist
            } else {
                EdgeKind::Loop
            };
            if let Some(misuse) = self.edges().find(|e| e.topic == own && e.kind != own_kind) {
                return Err(GraphError::OwnTopic {
                    group,
                    what,
                    topic: own,
                    kind: misuse.kind,
                });
            }
        }
        let edges: Vec<Edge> = self.edges().collect();
        for (i, first) in edges.iter().enumerate() {
            if let Some(second) = edges[i + 1..].iter().find(|e| e.topic == first.topic) {
                return Err(GraphError::DuplicateTopic {
                    group,
                    topic: first.topic.to_owned(),
                    first: first.kind,
                    second: second.kind,
                });
            }
        }
        Ok(())
    }
}

/// Kafka topic names allow `[a-zA-Z0-9._-]`, at most 249 characters; the group name gets a
/// suffix of up to 6, and group ids have no tighter rule.
pub fn valid_group_name(group: &str) -> bool {
    (1..=240).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
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
        group: "clicks",
        inputs: &[edge(EdgeKind::Input, "user-clicks")],
        joins: &[edge(EdgeKind::Join, "profiles")],
        lookups: &[edge(EdgeKind::Lookup, "countries")],
        outputs: &[edge(EdgeKind::Output, "alerts")],
        loopback: Some(edge(EdgeKind::Loop, "clicks-loop")),
        table: Some(edge(EdgeKind::Persist, "clicks-table")),
    };

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

    #[test]
    fn a_stateless_graph_without_loop_is_valid() {
        let g = GroupGraph {
            group: "filter",
            inputs: const { &[edge(EdgeKind::Input, "in")] },
            joins: &[],
            lookups: &[],
            outputs: const { &[edge(EdgeKind::Output, "out")] },
            loopback: None,
            table: None,
        };
        g.validate().unwrap();
    }
}
