//! Parses `#[processor(...)]` and the helper attributes into the model of `ast.rs`.
//!
//! Every malformed key is reported and skipped, so one build shows every mistake; an
//! attribute missing a required key is dropped from the model after its error.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Token, Type};

use crate::ast::{
    DecodeErrors, Input, Loopback, NilHandling, Persist, Processor, TimerDecl, TopicRef, Visit,
    WindowDecl,
};
use crate::ctxt::Ctxt;
use crate::symbol::*;

/// The parsed arguments of `#[processor(...)]`.
#[derive(Default)]
struct Args {
    group: Option<(String, Span)>,
    group_malformed: bool,
    krate: Option<syn::Path>,
    nil_handling: Option<NilHandling>,
    decode_errors: Option<DecodeErrors>,
    table_suffix: Option<String>,
    loop_suffix: Option<String>,
}

/// Reads the whole annotated item. `None` only when the tokens are not an item at all.
pub fn parse(cx: &mut Ctxt, args: TokenStream, input: TokenStream) -> Option<Processor> {
    let args = parse_args(cx, args);
    let mut item: syn::Item = match syn::parse2(input) {
        Ok(item) => item,
        Err(e) => {
            cx.syn_error(e);
            return None;
        }
    };
    let (ident, attrs) = match &mut item {
        syn::Item::Struct(s) => (s.ident.clone(), &mut s.attrs),
        syn::Item::Enum(e) => {
            cx.error_spanned_by(
                e.enum_token,
                "#[processor] goes on a struct, not an enum: a processor is one value whose \
                 methods handle messages",
            );
            (e.ident.clone(), &mut e.attrs)
        }
        syn::Item::Union(u) => {
            cx.error_spanned_by(u.union_token, "#[processor] goes on a struct, not a union");
            (u.ident.clone(), &mut u.attrs)
        }
        other => {
            cx.error_spanned_by(&*other, "#[processor] goes on a struct");
            return None;
        }
    };
    let helpers: Vec<syn::Attribute> = {
        let (helpers, rest) = std::mem::take(attrs)
            .into_iter()
            .partition(|a| HELPERS.iter().any(|h| a.path().is_ident(h)));
        *attrs = rest;
        helpers
    };
    let mut processor = Processor {
        item,
        ident,
        krate: args
            .krate
            .unwrap_or_else(|| syn::parse_str(DEFAULT_CRATE).unwrap_or_else(|_| unreachable!())),
        group: args.group,
        group_malformed: args.group_malformed,
        input_malformed: false,
        nil_handling: args.nil_handling,
        decode_errors: args.decode_errors,
        table_suffix: args.table_suffix,
        loop_suffix: args.loop_suffix,
        inputs: Vec::new(),
        persists: Vec::new(),
        joins: Vec::new(),
        lookups: Vec::new(),
        outputs: Vec::new(),
        loopbacks: Vec::new(),
        visits: Vec::new(),
        windows: Vec::new(),
        timers: Vec::new(),
    };
    for attr in &helpers {
        above_the_macro(cx, attr);
        parse_helper(cx, attr, &mut processor);
    }
    Some(processor)
}

/// Reports an edge attribute written above `#[goka::processor]`. Rust hands it to the macro
/// all the same, but first reports it as an unknown attribute, without saying why; this
/// says why. Source positions are known from rustc 1.88 on (line 0 before), so on older
/// compilers only rustc's own error remains.
fn above_the_macro(cx: &mut Ctxt, attr: &syn::Attribute) {
    let here = Span::call_site().start();
    let there = attr.span().start();
    if here.line == 0 || there.line == 0 {
        return;
    }
    if (there.line, there.column) < (here.line, here.column) {
        let name = attr
            .path()
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        cx.error_spanned_by(
            attr,
            format!(
                "#[{name}] is written above #[goka::processor]: write #[goka::processor(...)] \
                 first, then the edge attributes below it"
            ),
        );
    }
}

fn parse_args(cx: &mut Ctxt, args: TokenStream) -> Args {
    let mut out = Args::default();
    let mut seen = Seen::default();
    let parser = syn::meta::parser(|meta| {
        let key = key_of(&meta);
        if !seen.first(cx, &meta, &key) {
            return skip_value(&meta);
        }
        match key.as_str() {
            GROUP => match lit_str(cx, &meta, "group = \"my-group\"")? {
                Some(lit) => out.group = Some((lit.value(), lit.span())),
                None => out.group_malformed = true,
            },
            CRATE => {
                let Some(lit) = lit_str(cx, &meta, "crate = \"::goka\"")? else {
                    return Ok(());
                };
                match lit.parse::<syn::Path>() {
                    Ok(path) => out.krate = Some(path),
                    Err(_) => cx.error_spanned_by(
                        &lit,
                        format!(
                            "`crate` must be a path such as \"::goka\", not {:?}",
                            lit.value()
                        ),
                    ),
                }
            }
            TABLE_SUFFIX | LOOP_SUFFIX => {
                let Some(lit) = lit_str(cx, &meta, "table_suffix = \"-state\"")? else {
                    return Ok(());
                };
                let suffix = lit.value();
                let valid = !suffix.is_empty()
                    && suffix.len() <= 20
                    && suffix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                if !valid {
                    cx.error_spanned_by(
                        &lit,
                        format!(
                            "`{key}` takes 1 to 20 characters of a-z, A-Z, 0-9, `.`, `_` and `-` \
                             (it ends topic names), not {suffix:?}"
                        ),
                    );
                } else if key == TABLE_SUFFIX {
                    out.table_suffix = Some(suffix);
                } else {
                    out.loop_suffix = Some(suffix);
                }
            }
            NIL_HANDLING => out.nil_handling = choice(cx, &meta, NIL_HANDLING, NIL_VALUES)?,
            DECODE_ERRORS => out.decode_errors = choice(cx, &meta, DECODE_ERRORS, DECODE_VALUES)?,
            _ => {
                unknown(
                    cx,
                    &meta,
                    &key,
                    PROCESSOR,
                    &[
                        GROUP,
                        CRATE,
                        NIL_HANDLING,
                        DECODE_ERRORS,
                        TABLE_SUFFIX,
                        LOOP_SUFFIX,
                    ],
                );
                return skip_value(&meta);
            }
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(e);
    }
    out
}

/// One helper attribute; it joins the model only when every required key is there.
fn parse_helper(cx: &mut Ctxt, attr: &syn::Attribute, p: &mut Processor) {
    let name = attr
        .path()
        .get_ident()
        .map(ToString::to_string)
        .unwrap_or_default();
    let allowed: &[&str] = match name.as_str() {
        INPUT => &[TOPIC, TOPICS, HANDLER, EVENT_TIME],
        PERSIST => &[VALUE, CODEC],
        JOIN | LOOKUP => &[TABLE],
        OUTPUT => &[TOPIC],
        VISIT => &[VISITOR, HANDLER],
        WINDOW => &[WINDOW, ON_CLOSE],
        TIMER => &[TIMER, HANDLER],
        _ => &[VALUE, CODEC, HANDLER], // LOOPBACK
    };
    let mut fields = Fields::default();
    let mut seen = Seen::default();
    // A key that was reported (unknown, repeated, malformed) is not reported again as missing.
    let mut reported = false;
    let result = attr.parse_nested_meta(|meta| {
        let key = key_of(&meta);
        if !allowed.contains(&key.as_str()) {
            unknown(cx, &meta, &key, &name, allowed);
            reported = true;
            return skip_value(&meta);
        }
        if !seen.first(cx, &meta, &key) {
            return skip_value(&meta);
        }
        let value = meta.value()?;
        let parsed = match key.as_str() {
            TOPIC | TABLE => value.parse().map(|t| fields.topics = Some(vec![t])),
            VISITOR | WINDOW | TIMER => value.parse().map(|v| fields.visitor = Some(v)),
            ON_CLOSE => parse_handler(value).map(|h| fields.handler = Some(h)),
            TOPICS => parse_type_list(value).map(|t| fields.topics = Some(t)),
            HANDLER => parse_handler(value).map(|h| fields.handler = Some(h)),
            EVENT_TIME => parse_handler(value).map(|h| fields.event_time = Some(h)),
            VALUE => value.parse().map(|v| fields.value = Some(v)),
            _ => value.parse().map(|c| fields.codec = Some(c)), // CODEC
        };
        if let Err(e) = parsed {
            let expected = match key.as_str() {
                TOPIC => "a topic type declared with `goka::stream!` or `goka::table!`",
                TABLE => "a table type declared with `goka::table!`",
                TOPICS => "a list of topic types: `[Clicks, Views]`",
                VISITOR => "a visitor type declared with `goka::visitor!`",
                WINDOW => "a window type declared with `goka::window!`",
                TIMER => "a timer type declared with `goka::timer!`",
                HANDLER | ON_CLOSE => "a method: `Self::on_click`",
                EVENT_TIME => "a method: `Self::time_of`, taking `&self` and the value, returning `Option<i64>`",
                VALUE => "a type",
                _ => "a codec type such as `Json`",
            };
            cx.error_at(e.span(), format!("`{key}` takes {expected}"));
            reported = true;
            return skip_value_rest(value);
        }
        Ok(())
    });
    if let Err(e) = result {
        cx.syn_error(e);
        p.input_malformed |= name == INPUT;
        return;
    }
    p.input_malformed |= name == INPUT && reported;
    let mut missing = |key: &str| {
        if !reported {
            cx.error_spanned_by(attr, format!("#[{name}] needs `{key} = ...`"));
        }
    };
    match name.as_str() {
        INPUT => match (fields.topics, fields.handler) {
            (Some(topics), Some(handler)) if !topics.is_empty() => p.inputs.push(Input {
                topics,
                handler,
                event_time: fields.event_time,
            }),
            (Some(_), Some(_)) => {
                cx.error_spanned_by(attr, "#[input] needs at least one topic");
                p.input_malformed = true;
            }
            (None, _) => {
                missing("topic");
                p.input_malformed = true;
            }
            (_, None) => {
                missing("handler");
                p.input_malformed = true;
            }
        },
        PERSIST => match (fields.value, fields.codec) {
            (Some(value), codec) => {
                if codec.is_none() {
                    missing(CODEC);
                }
                p.persists.push(Persist {
                    value,
                    codec,
                    attr: attr.clone(),
                });
            }
            (None, _) => missing(VALUE),
        },
        VISIT => match (fields.visitor, fields.handler) {
            (Some(visitor), Some(handler)) => p.visits.push(Visit { visitor, handler }),
            (None, _) => missing(VISITOR),
            (_, None) => missing(HANDLER),
        },
        WINDOW => match fields.visitor {
            Some(window) => p.windows.push(WindowDecl {
                window,
                on_close: fields.handler,
            }),
            None => missing(WINDOW),
        },
        TIMER => match (fields.visitor, fields.handler) {
            (Some(timer), Some(handler)) => p.timers.push(TimerDecl { timer, handler }),
            (None, _) => missing(TIMER),
            (_, None) => missing(HANDLER),
        },
        LOOPBACK => match (fields.value, fields.codec, fields.handler) {
            (Some(value), Some(codec), Some(handler)) => p.loopbacks.push(Loopback {
                value,
                codec,
                handler,
                attr: attr.clone(),
            }),
            (None, _, _) => missing(VALUE),
            (_, None, _) => missing(CODEC),
            (_, _, None) => missing(HANDLER),
        },
        _ => match fields.topics.and_then(|mut t| t.pop()) {
            Some(topic) => match name.as_str() {
                JOIN => p.joins.push(TopicRef { topic }),
                LOOKUP => p.lookups.push(TopicRef { topic }),
                _ => p.outputs.push(TopicRef { topic }),
            },
            None if name == OUTPUT => missing(TOPIC),
            None => missing(TABLE),
        },
    }
}

#[derive(Default)]
struct Fields {
    topics: Option<Vec<Type>>,
    visitor: Option<Type>,
    handler: Option<syn::Path>,
    event_time: Option<syn::Path>,
    value: Option<Type>,
    codec: Option<Type>,
}

/// Keys already given in one attribute.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    /// Whether `key` is new; reports it when it is not. `topic` and `topics` count as one.
    fn first(&mut self, cx: &mut Ctxt, meta: &ParseNestedMeta<'_>, key: &str) -> bool {
        let canonical = if key == TOPICS { TOPIC } else { key };
        if self.0.iter().any(|k| k == canonical) {
            let what = if canonical == TOPIC {
                "`topic`/`topics`".to_owned()
            } else {
                format!("`{key}`")
            };
            cx.error_spanned_by(&meta.path, format!("{what} is given twice"));
            return false;
        }
        self.0.push(canonical.to_owned());
        true
    }
}

fn key_of(meta: &ParseNestedMeta<'_>) -> String {
    let path = &meta.path;
    path.get_ident()
        .map(ToString::to_string)
        .unwrap_or_else(|| quote::quote!(#path).to_string().replace(' ', ""))
}

fn unknown(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>, key: &str, attr: &str, allowed: &[&str]) {
    let expected = allowed
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    cx.error_spanned_by(
        &meta.path,
        format!("unknown key `{key}` in #[{attr}]: expected one of {expected}"),
    );
}

/// Consumes `= value` after a key that was reported, so parsing goes on with the next key.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

/// Skips what is left of a value that did not parse, up to the next `,`.
fn skip_value_rest(input: ParseStream<'_>) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

/// A string literal value; anything else is reported (with `example`) and skipped.
fn lit_str(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    example: &str,
) -> syn::Result<Option<syn::LitStr>> {
    let value = meta.value()?;
    if value.peek(syn::LitStr) {
        return value.parse().map(Some);
    }
    let key = key_of(meta);
    cx.error_at(
        value.span(),
        format!("`{key}` takes a string literal: `{example}`"),
    );
    skip_value_rest(value)?;
    Ok(None)
}

fn choice<T: Copy>(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    key: &str,
    allowed: &[(&str, T)],
) -> syn::Result<Option<T>> {
    let Some(lit) = lit_str(cx, meta, &format!("{key} = \"{}\"", allowed[0].0))? else {
        return Ok(None);
    };
    let value = lit.value();
    if let Some((_, picked)) = allowed.iter().find(|(name, _)| *name == value) {
        return Ok(Some(*picked));
    }
    let expected = allowed
        .iter()
        .map(|(v, _)| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    cx.error_spanned_by(
        &lit,
        format!("`{key}` must be one of {expected}, not {value:?}"),
    );
    Ok(None)
}

/// `[A, B, ...]`.
fn parse_type_list(input: ParseStream<'_>) -> syn::Result<Vec<Type>> {
    let content;
    syn::bracketed!(content in input);
    let list = Punctuated::<Type, Token![,]>::parse_terminated(&content)?;
    Ok(list.into_iter().collect())
}

/// `Self::method`, a path to a function, or a bare method name (meaning `Self::name`).
fn parse_handler(input: ParseStream<'_>) -> syn::Result<syn::Path> {
    let path = HandlerPath::parse(input)?.0;
    if let Some(ident) = path.get_ident() {
        return Ok(syn::parse_quote_spanned!(ident.span()=> Self::#ident));
    }
    Ok(path)
}

struct HandlerPath(syn::Path);

impl Parse for HandlerPath {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let lookahead = input.lookahead1();
        let starts_a_path = lookahead.peek(syn::Ident)
            || lookahead.peek(Token![Self])
            || lookahead.peek(Token![::])
            || lookahead.peek(Token![crate])
            || lookahead.peek(Token![self])
            || lookahead.peek(Token![super]);
        if starts_a_path {
            input.parse().map(Self)
        } else {
            Err(syn::Error::new(
                input.span(),
                "`handler` must name a method, such as `Self::on_click`",
            ))
        }
    }
}
