//! The marker impls that gate `Context`: each is spanned at the user's tokens, so a bound
//! that does not hold (an output that is a table, a joined table keyed differently, a codec
//! that does not fit its value) is reported where the attribute names it.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::Processor;

/// Each impl has the struct's own generics, so a generic struct (reported) still gets them.
pub fn markers(p: &Processor) -> TokenStream {
    let name = &p.ident;
    let (impl_generics, ty_generics, where_clause) = super::generics(p);
    let mut out = TokenStream::new();
    {
        for (_, topic) in super::unique_inputs(p) {
            let pv = super::private_at(p, topic.span());
            out.extend(quote_spanned! {topic.span()=>
                impl #impl_generics #pv::Consumes<#topic> for #name #ty_generics #where_clause {}
            });
        }
        for table in super::unique(&p.joins) {
            let pv = super::private_at(p, table.span());
            out.extend(quote_spanned! {table.span()=>
                impl #impl_generics #pv::Joins<#table> for #name #ty_generics #where_clause {}
            });
        }
    }
    for table in super::unique(&p.lookups) {
        let pv = super::private_at(p, table.span());
        out.extend(quote_spanned! {table.span()=>
            impl #impl_generics #pv::LooksUp<#table> for #name #ty_generics #where_clause {}
        });
    }
    for topic in super::unique(&p.outputs) {
        let pv = super::private_at(p, topic.span());
        out.extend(quote_spanned! {topic.span()=>
            impl #impl_generics #pv::Emits<#topic> for #name #ty_generics #where_clause {}
            const _: () = #pv::output_is_a_stream::<#topic>();
        });
    }
    for visit in &p.visits {
        let visitor = &visit.visitor;
        let pv = super::private_at(p, visitor.span());
        out.extend(quote_spanned! {visitor.span()=>
            impl #impl_generics #pv::Visits<#visitor> for #name #ty_generics #where_clause {}
        });
    }
    for timer in unique_timers(p) {
        let pv = super::private_at(p, timer.span());
        out.extend(quote_spanned! {timer.span()=>
            impl #impl_generics #pv::Timed<#timer> for #name #ty_generics #where_clause {}
        });
    }
    for window in unique_windows(p) {
        let pv = super::private_at(p, window.span());
        out.extend(quote_spanned! {window.span()=>
            impl #impl_generics #pv::Windowed<#window> for #name #ty_generics #where_clause {}
        });
    }
    if let Some(persist) = p.persists.first() {
        let value = &persist.value;
        let value_ty = quote_spanned!(value.span()=> type Value = #value;);
        let codec_ty = match &persist.codec {
            Some(codec) => quote_spanned!(codec.span()=> type ValueCodec = #codec;),
            // Reported already; a placeholder keeps `ctx.value()` and friends compiling.
            None => {
                let pv = super::private(p);
                quote!(type ValueCodec = #pv::MissingCodec;)
            }
        };
        let pv = super::private_at(p, persist.value.span());
        out.extend(quote_spanned! {persist.value.span()=>
            impl #impl_generics #pv::Stateful for #name #ty_generics #where_clause {
                #value_ty
                #codec_ty
            }
        });
    }
    if let Some(lb) = p.loopbacks.first() {
        let (value, codec) = (&lb.value, &lb.codec);
        let value_ty = quote_spanned!(value.span()=> type Value = #value;);
        let codec_ty = quote_spanned!(codec.span()=> type ValueCodec = #codec;);
        let pv = super::private_at(p, lb.value.span());
        out.extend(quote_spanned! {lb.value.span()=>
            impl #impl_generics #pv::Loops for #name #ty_generics #where_clause {
                #value_ty
                #codec_ty
            }
        });
    }
    out
}

/// Each declared window once: a window declared twice is reported, and a second impl would
/// only add a conflict.
pub fn unique_windows(p: &Processor) -> impl Iterator<Item = &syn::Type> {
    let mut seen = Vec::new();
    p.windows.iter().map(|w| &w.window).filter(move |t| {
        let written = quote::ToTokens::to_token_stream(t).to_string();
        let new = !seen.contains(&written);
        seen.push(written);
        new
    })
}

/// Each declared timer once (see [`unique_windows`]).
pub fn unique_timers(p: &Processor) -> impl Iterator<Item = &syn::Type> {
    let mut seen = Vec::new();
    p.timers.iter().map(|t| &t.timer).filter(move |t| {
        let written = quote::ToTokens::to_token_stream(t).to_string();
        let new = !seen.contains(&written);
        seen.push(written);
        new
    })
}
