//! Rules across attributes, one function per rule. Each reports at the user's own tokens.
//!
//! Rules about types (a handler's message type, a joined table's key type, a codec that does
//! not fit its value) are left to the compiler through the generated trait bounds, which
//! point at the same tokens.

use quote::ToTokens;

use crate::ast::Processor;
use crate::ctxt::Ctxt;
use crate::symbol::*;

pub fn check(cx: &mut Ctxt, p: &Processor) {
    group_is_given_and_valid(cx, p);
    no_generics(cx, p);
    at_least_one_input(cx, p);
    at_most_one_persist(cx, p);
    at_most_one_loopback(cx, p);
    each_topic_used_once(cx, p);
    declared_once(cx, "window", p.windows.iter().map(|w| &w.window));
    declared_once(cx, "timer", p.timers.iter().map(|t| &t.timer));
}

/// A window or timer type has one edge.
fn declared_once<'a>(cx: &mut Ctxt, what: &str, types: impl Iterator<Item = &'a syn::Type>) {
    let mut seen: Vec<String> = Vec::new();
    for ty in types {
        let written = ty.to_token_stream().to_string();
        if seen.contains(&written) {
            cx.error_spanned_by(
                ty,
                format!("the {what} `{written}` is declared twice: each {what} has one edge"),
            );
        } else {
            seen.push(written);
        }
    }
}

fn group_is_given_and_valid(cx: &mut Ctxt, p: &Processor) {
    let Some((group, span)) = &p.group else {
        if p.group_malformed {
            return;
        }
        cx.error_spanned_by(
            &p.ident,
            format!(
                "`{}` has no group name: write `#[processor(group = \"...\")]`",
                p.ident
            ),
        );
        return;
    };
    let problem = if group.is_empty() {
        Some("is empty".to_owned())
    } else if group.len() > MAX_GROUP_LEN {
        Some(format!("is longer than {MAX_GROUP_LEN} characters"))
    } else {
        group
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| format!("contains {c:?}"))
    };
    if let Some(problem) = problem {
        cx.error_at(
            *span,
            format!(
                "group name {group:?} {problem}: it names Kafka topics (`<group>-table`), so use \
                 1 to {MAX_GROUP_LEN} characters of a-z, A-Z, 0-9, `.`, `_` and `-`"
            ),
        );
    }
}

fn no_generics(cx: &mut Ctxt, p: &Processor) {
    let generics = match &p.item {
        syn::Item::Struct(s) => &s.generics,
        syn::Item::Enum(e) => &e.generics,
        syn::Item::Union(u) => &u.generics,
        _ => return,
    };
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        cx.error_spanned_by(
            generics,
            "a #[processor] struct cannot have generic parameters: its graph is one constant \
             of one type; keep configuration in fields",
        );
    }
}

fn at_least_one_input(cx: &mut Ctxt, p: &Processor) {
    if p.inputs.is_empty() && !p.input_malformed {
        cx.error_spanned_by(
            &p.ident,
            format!(
                "`{}` has no input: add `#[input(topic = ..., handler = ...)]`",
                p.ident
            ),
        );
    }
}

fn at_most_one_persist(cx: &mut Ctxt, p: &Processor) {
    for extra in p.persists.iter().skip(1) {
        cx.error_spanned_by(
            &extra.attr,
            "a processor has at most one group table: remove the second #[persist]",
        );
    }
}

fn at_most_one_loopback(cx: &mut Ctxt, p: &Processor) {
    for extra in p.loopbacks.iter().skip(1) {
        cx.error_spanned_by(
            &extra.attr,
            "a processor has at most one loop topic: remove the second #[loopback]",
        );
    }
}

/// goka's rule: a topic has one edge. Topics are compared by how they are written; two
/// different names for one topic are caught by the graph's const check.
fn each_topic_used_once(cx: &mut Ctxt, p: &Processor) {
    let mut seen: Vec<(&str, String)> = Vec::new();
    for (kind, topic) in p.topic_uses() {
        let written = topic.to_token_stream().to_string();
        if let Some((first, _)) = seen.iter().find(|(_, t)| *t == written) {
            let what = if *first == kind {
                format!("`{written}` is declared twice as {kind}")
            } else {
                format!("`{written}` is already declared as {first}; it cannot also be {kind}")
            };
            cx.error_spanned_by(topic, format!("{what}: each topic has one edge"));
        } else {
            seen.push((kind, written));
        }
    }
}
