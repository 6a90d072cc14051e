//! Generates the code of a processor from its model: the `Group` impl (graph const,
//! options, key type, dispatch), the marker impls that gate `Context`, and a const check
//! of the graph. After an error the item is still emitted, with whatever impls the valid
//! attributes allow, so one mistake reads as one error.

mod dispatch;
mod graph;
mod markers;

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use crate::ast::{DecodeErrors, Input, NilHandling, Processor, TopicRef};
use crate::ctxt::Ctxt;

pub fn expand(cx: Ctxt, p: &Processor) -> TokenStream {
    let item = &p.item;
    let generated = if p.inputs.is_empty() {
        stub(p)
    } else {
        // The graph's compile-time check only runs on a processor that compiles otherwise,
        // and names the type, which a generic struct (reported) does not allow.
        full(p, !cx.has_errors() && !has_generics(p))
    };
    let errors = cx.into_compile_errors();
    quote! {
        #item
        #generated
        #errors
    }
}

fn has_generics(p: &Processor) -> bool {
    match &p.item {
        syn::Item::Struct(s) => !s.generics.params.is_empty(),
        _ => false,
    }
}

/// The struct's generics for impl headers: `impl<...> Trait for Name<...> where ...`, with
/// `Name<...>: Send + Sync + 'static` added so the impls hold whatever its parameters are.
/// A processor struct may not be generic (reported by `check`), but impls with its own
/// generics keep every handler that uses `Context` compiling after that one error.
fn generics(p: &Processor) -> (TokenStream, TokenStream, TokenStream) {
    let syn::Item::Struct(s) = &p.item else {
        return (TokenStream::new(), TokenStream::new(), TokenStream::new());
    };
    if s.generics.params.is_empty() && s.generics.where_clause.is_none() {
        return (TokenStream::new(), TokenStream::new(), TokenStream::new());
    }
    let (impl_generics, ty_generics, where_clause) = s.generics.split_for_impl();
    let name = &p.ident;
    let predicates = where_clause.map(|w| &w.predicates);
    (
        quote!(#impl_generics),
        quote!(#ty_generics),
        quote!(where #name #ty_generics: ::core::marker::Send + ::core::marker::Sync + 'static, #predicates),
    )
}

/// Every input topic with its attribute, each topic once: a topic written twice is already
/// reported, and generating it twice would only add conflicting impls.
fn unique_inputs(p: &Processor) -> impl Iterator<Item = (&Input, &syn::Type)> {
    let mut seen = Vec::new();
    p.inputs
        .iter()
        .flat_map(|i| i.topics.iter().map(move |t| (i, t)))
        .filter(move |(_, t)| {
            let written = t.to_token_stream().to_string();
            let new = !seen.contains(&written);
            seen.push(written);
            new
        })
}

/// Each topic of `list` once (see [`unique_inputs`]).
fn unique(list: &[TopicRef]) -> impl Iterator<Item = &syn::Type> {
    let mut seen = Vec::new();
    list.iter().map(|r| &r.topic).filter(move |t| {
        let written = t.to_token_stream().to_string();
        let new = !seen.contains(&written);
        seen.push(written);
        new
    })
}

/// The path generated code names everything through.
fn private(p: &Processor) -> TokenStream {
    let krate = &p.krate;
    quote!(#krate::__private)
}

/// The same path with every token at `span`, for code whose errors belong to the user's
/// tokens: the compiler spans a bound in an impl header by its whole path, and the path's
/// own tokens would otherwise point at the `#[processor]` attribute.
fn private_at(p: &Processor, span: Span) -> TokenStream {
    respan(private(p), span)
}

pub(crate) fn respan(stream: TokenStream, span: Span) -> TokenStream {
    stream
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                TokenTree::Group(respanned)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

fn full(p: &Processor, check_graph: bool) -> TokenStream {
    let pv = private(p);
    let name = &p.ident;
    let first = &p.inputs[0].topics[0];
    let graph = graph::graph(p);
    let options = options(p);
    // A generic struct (reported) would need its handlers' bounds on every parameter; the
    // stub's dispatch leaves them uncalled.
    let dispatch = if has_generics(p) {
        stub_dispatch(p)
    } else {
        let mut all = dispatch::dispatch(p);
        all.extend(dispatch::event_time(p));
        all.extend(dispatch::visit(p));
        all.extend(dispatch::close(p));
        all.extend(dispatch::fire(p));
        all
    };
    let markers = markers::markers(p);
    let key = {
        let pv = private_at(p, first.span());
        quote_spanned! {first.span()=>
            type Key = <#first as #pv::Topic>::Key;
            type KeyCodec = <#first as #pv::Topic>::KeyCodec;
        }
    };
    let check = if check_graph {
        let span = p.group.as_ref().map_or(name.span(), |(_, s)| *s);
        let pv = private_at(p, span);
        quote_spanned! {span=>
            const _: () = #pv::check_graph(&<#name as #pv::Group>::GRAPH);
        }
    } else {
        TokenStream::new()
    };
    let (impl_generics, ty_generics, where_clause) = generics(p);
    quote! {
        impl #impl_generics #pv::Group for #name #ty_generics #where_clause {
            const GRAPH: #pv::GroupGraph = #graph;
            #options
            #key
        }
        impl #impl_generics #pv::Handlers for #name #ty_generics #where_clause {
            #dispatch
        }
        #markers
        #check
    }
}

/// `nil_handling` and `decode_errors`, when given.
fn options(p: &Processor) -> TokenStream {
    let pv = private(p);
    let nil = p.nil_handling.map(|choice| {
        let variant = match choice {
            NilHandling::Process => quote!(Process),
            NilHandling::Decode => quote!(Decode),
            NilHandling::Restore => quote!(Restore),
            NilHandling::Ignore => quote!(Ignore),
        };
        quote!(const NIL_HANDLING: #pv::NilHandling = #pv::NilHandling::#variant;)
    });
    let decode = p.decode_errors.map(|choice| {
        let variant = match choice {
            DecodeErrors::Skip => quote!(SkipAndCount),
            DecodeErrors::Fail => quote!(Fail),
            DecodeErrors::DeadLetter => quote!(DeadLetter),
        };
        quote!(const DECODE_ERRORS: #pv::DecodeErrorPolicy = #pv::DecodeErrorPolicy::#variant;)
    });
    let dead_letters = format!("{}{}", p.group_name(), "-dead-letters");
    quote! {
        #nil #decode
        const DEAD_LETTERS: &'static str = #dead_letters;
    }
}

/// `Group` and `Handlers` impls with no inputs and goka's default key type (`String`), for a processor
/// whose inputs did not parse: handlers that use `Context<'_, Self>` still type-check.
fn stub(p: &Processor) -> TokenStream {
    let pv = private(p);
    let name = &p.ident;
    let group = p.group_name();
    let markers = markers::markers(p);
    let dispatch = stub_dispatch(p);
    let (impl_generics, ty_generics, where_clause) = generics(p);
    quote! {
        impl #impl_generics #pv::Group for #name #ty_generics #where_clause {
            const GRAPH: #pv::GroupGraph = #pv::GroupGraph::new(#group);
            // goka's default key type, so joins, emits and `ctx.key()` still type-check.
            type Key = #pv::String;
            type KeyCodec = #pv::StringCodec;
        }
        impl #impl_generics #pv::Handlers for #name #ty_generics #where_clause {
            #dispatch
        }
        #markers
    }
}

/// A dispatch that calls no handler, for a processor that does not compile.
fn stub_dispatch(p: &Processor) -> TokenStream {
    let pv = private(p);
    quote! {
        fn dispatch<'a>(
            &'a self,
            _: &'a mut #pv::Context<'_, Self>,
            _: #pv::Option<&'a [u8]>,
        ) -> #pv::BoxFuture<'a, #pv::Result<(), #pv::CallbackError>> {
            #pv::stub_dispatch()
        }
    }
}
