//! The marker impls that gate `Context`: each is spanned at the user's tokens, so a bound
//! that does not hold (an output that is a table, a joined table keyed differently, a codec
//! that does not fit its value) is reported where the attribute names it.

use proc_macro2::TokenStream;
use quote::quote_spanned;
use syn::spanned::Spanned;

use crate::ast::Processor;

/// `keyed`: whether the group's key type is known (impls bounded by it are left out of a
/// stub).
pub fn markers(p: &Processor, keyed: bool) -> TokenStream {
    let name = &p.ident;
    let mut out = TokenStream::new();
    if keyed {
        for (_, topic) in super::unique_inputs(p) {
            let pv = super::private_at(p, topic.span());
            out.extend(quote_spanned! {topic.span()=>
                impl #pv::Consumes<#topic> for #name {}
            });
        }
        for table in super::unique(&p.joins) {
            let pv = super::private_at(p, table.span());
            out.extend(quote_spanned! {table.span()=>
                impl #pv::Joins<#table> for #name {}
            });
        }
    }
    for table in super::unique(&p.lookups) {
        let pv = super::private_at(p, table.span());
        out.extend(quote_spanned! {table.span()=>
            impl #pv::LooksUp<#table> for #name {}
        });
    }
    for topic in super::unique(&p.outputs) {
        let pv = super::private_at(p, topic.span());
        out.extend(quote_spanned! {topic.span()=>
            impl #pv::Emits<#topic> for #name {}
        });
    }
    if let Some(persist) = p.persists.first() {
        let (value, codec) = (&persist.value, &persist.codec);
        let value_ty = quote_spanned!(value.span()=> type Value = #value;);
        let codec_ty = quote_spanned!(codec.span()=> type ValueCodec = #codec;);
        let pv = super::private_at(p, persist.value.span());
        out.extend(quote_spanned! {persist.value.span()=>
            impl #pv::Stateful for #name {
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
            impl #pv::Loops for #name {
                #value_ty
                #codec_ty
            }
        });
    }
    out
}
