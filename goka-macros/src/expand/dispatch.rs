//! `Group::dispatch`: a `match` from the message's topic to its handler. Decoding and the
//! sync/async distinction are runtime helpers; the handler call is spanned at the user's
//! `handler = ...`, so a wrong message type or signature is reported there.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{NilHandling, Processor};

pub fn dispatch(p: &Processor) -> TokenStream {
    let pv = super::private(p);
    let optional = p.nil_handling == Some(NilHandling::Process);
    let mut arms = TokenStream::new();
    for (input, topic) in super::unique_inputs(p) {
        {
            let decode = if optional {
                quote_spanned!(topic.span()=> #pv::decode_optional::<#topic>(value)?)
            } else {
                quote_spanned!(topic.span()=> #pv::decode_value::<#topic>(value)?)
            };
            let call = call(p, &input.handler, decode);
            arms.extend(quote! {
                <#topic as #pv::Topic>::NAME => { #call }
            });
        }
    }
    if let Some(lb) = p.loopbacks.first() {
        let topic = p.loop_topic();
        let call = call(p, &lb.handler, quote!(#pv::decode_loop::<Self>(value)?));
        arms.extend(quote! {
            #topic => { #call }
        });
    }
    quote! {
        fn dispatch<'a>(
            &'a self,
            ctx: &'a mut #pv::Context<'_, Self>,
            value: #pv::Option<&'a [u8]>,
        ) -> #pv::BoxFuture<'a, #pv::Result<(), #pv::CallbackError>> {
            #[allow(unused_imports)]
            use #pv::{
                AsyncKind as _, BoxedAsyncKind as _, BoxedSyncKind as _, OtherKind as _,
                SyncKind as _,
            };
            #pv::Box::pin(async move {
                match ctx.topic() {
                    #arms
                    other => #pv::Result::Err(#pv::CallbackError::no_handler(other)),
                }
            })
        }
    }
}

/// Decodes, calls the handler and awaits it if it is async.
fn call(p: &Processor, handler: &syn::Path, decode: TokenStream) -> TokenStream {
    let span = handler.span();
    let pv = super::private_at(p, span);
    let invoke = quote_spanned!(span=> #handler(self, ctx, message));
    let finish = quote_spanned! {span=>
        let kind = (&&&&#pv::Returned::of(&returned)).goka_handler_kind();
        kind.finish(returned)
    };
    // What the handler returned goes out of scope before the await: a binding alive across
    // it would make the dispatch future as `Send` as the return type (`Box<dyn Error>` is
    // not), even when moved.
    quote! {
        let finishing = {
            let message = #decode;
            let returned = #invoke;
            #finish
        };
        finishing.await
    }
}
