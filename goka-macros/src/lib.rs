//! Attribute macros of goka (re-exported by the `goka` crate, where they are documented).
//!
//! The crate follows the usual shape: `attr.rs` parses the attributes into the model of
//! `ast.rs` (names in `symbol.rs`), `check.rs` applies the rules that span attributes, and
//! `expand/` generates code. Errors are collected in a `Ctxt`, so every mistake of one
//! struct is reported in one build. Generated code names the runtime only through
//! `::goka::__private` (or `crate = "..."`).

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
mod symbol;

use proc_macro::TokenStream;

/// Turns a struct into a processor group. Documented on `goka::processor`.
#[proc_macro_attribute]
pub fn processor(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = ctxt::Ctxt::default();
    let Some(model) = attr::parse(&mut cx, args.into(), input.clone().into()) else {
        let mut out = cx.into_compile_errors();
        out.extend(proc_macro2::TokenStream::from(input));
        return out.into();
    };
    check::check(&mut cx, &model);
    expand::expand(cx, &model).into()
}
