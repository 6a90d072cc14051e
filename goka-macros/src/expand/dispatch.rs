//! `Handlers::dispatch`: a `match` from the message's topic to its handler. Decoding and the
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
            let (decode, caller) = if optional {
                (
                    quote_spanned!(topic.span()=> #pv::decode_optional::<#topic>(value)?),
                    quote!(call_optional::<Self, #topic, <#topic as #pv::Topic>::Value, _, _>),
                )
            } else {
                (
                    quote_spanned!(topic.span()=> #pv::decode_value::<#topic>(value)?),
                    quote!(call_input::<Self, #topic, <#topic as #pv::Topic>::Value, _, _>),
                )
            };
            let call = call(p, &input.handler, decode, caller);
            arms.extend(quote! {
                <#topic as #pv::Topic>::NAME => { #call }
            });
        }
    }
    if let Some(lb) = p.loopbacks.first() {
        let topic = p.loop_topic();
        let call = call(
            p,
            &lb.handler,
            quote!(#pv::decode_loop::<Self>(value)?),
            quote!(call_loop::<Self, <Self as #pv::Loops>::Value, _, _>),
        );
        arms.extend(quote! {
            #topic => { #call }
        });
    }
    let signature = quote! {
        fn dispatch<'a>(
            &'a self,
            ctx: &'a mut #pv::Context<'_, Self>,
            value: #pv::Option<&'a [u8]>,
        ) -> #pv::BoxFuture<'a, #pv::Result<(), #pv::CallbackError>>
    };
    matcher(p, signature, quote!(ctx.topic()), arms)
}

/// `Handlers::event_time`, for groups with an input whose `event_time = ...` reads a
/// message's event time from its value: a `match` from the topic to that method, whose
/// signature (`fn(&self, &Value) -> Option<i64>`) is checked at the user's path.
pub fn event_time(p: &Processor) -> TokenStream {
    if p.inputs.iter().all(|i| i.event_time.is_none()) {
        return TokenStream::new();
    }
    let pv = super::private(p);
    let mut arms = TokenStream::new();
    for (input, topic) in super::unique_inputs(p) {
        let Some(method) = &input.event_time else {
            continue;
        };
        let span = method.span();
        let at = super::private_at(p, span);
        let read = quote_spanned! {span=>
            #at::event_time_of::<Self, <#topic as #at::Topic>::Value>(#method, self, &value)
        };
        arms.extend(quote! {
            <#topic as #pv::Topic>::NAME => {
                let value = #pv::decode_value::<#topic>(value).ok()?;
                #read
            }
        });
    }
    quote! {
        const EVENT_TIME: bool = true;

        fn event_time(&self, topic: &str, value: #pv::Option<&[u8]>) -> #pv::Option<i64> {
            match topic {
                #arms
                _ => #pv::Option::None,
            }
        }
    }
}

/// `Handlers::visit`, for groups with `#[visit]` edges: a `match` from the visitor's name to its
/// handler, whose signature is checked like an input handler's.
pub fn visit(p: &Processor) -> TokenStream {
    if p.visits.is_empty() {
        return TokenStream::new();
    }
    let pv = super::private(p);
    let mut arms = TokenStream::new();
    for v in &p.visits {
        let visitor = &v.visitor;
        let value = quote_spanned!(visitor.span()=> #pv::visit_value::<#visitor>(value)?);
        let caller = quote!(call_visit::<Self, #visitor, <#visitor as #pv::Visitor>::Value, _, _>);
        let call = call(p, &v.handler, value, caller);
        arms.extend(quote! {
            <#visitor as #pv::Visitor>::NAME => { #call }
        });
    }
    let signature = quote! {
        fn visit<'a>(
            &'a self,
            ctx: &'a mut #pv::Context<'_, Self>,
            visitor: &'a str,
            value: &'a (dyn #pv::Any + Send + Sync),
        ) -> #pv::BoxFuture<'a, #pv::Result<(), #pv::CallbackError>>
    };
    matcher(p, signature, quote!(visitor), arms)
}

/// `Handlers::close_window`, for groups with `#[window(..., on_close = ...)]` edges: a `match`
/// from the window's name to its `on_close` handler, whose signature is checked like an
/// input handler's.
pub fn close(p: &Processor) -> TokenStream {
    let with_handler: Vec<_> = super::markers::unique_windows(p)
        .filter_map(|t| {
            p.windows
                .iter()
                .find(|w| std::ptr::eq(&w.window, t))
                .and_then(|w| w.on_close.as_ref().map(|h| (t, h)))
        })
        .collect();
    if with_handler.is_empty() {
        return TokenStream::new();
    }
    let pv = super::private(p);
    let mut arms = TokenStream::new();
    for (window, handler) in with_handler {
        let value = quote_spanned!(window.span()=> #pv::closed_value::<#window>(range, value)?);
        let caller = quote!(call_close::<Self, #window, <#window as #pv::Window>::Value, _, _>);
        let call = call(p, handler, value, caller);
        arms.extend(quote! {
            <#window as #pv::Window>::NAME => { #call }
        });
    }
    let signature = quote! {
        fn close_window<'a>(
            &'a self,
            ctx: &'a mut #pv::Context<'_, Self>,
            window: &'a str,
            range: #pv::WindowRange,
            value: &'a [u8],
        ) -> #pv::BoxFuture<'a, #pv::Result<(), #pv::CallbackError>>
    };
    matcher(p, signature, quote!(window), arms)
}

/// `Handlers::fire_timer`, for groups with `#[timer(...)]` edges: a `match` from the timer's
/// name to its handler, whose signature is checked like an input handler's.
pub fn fire(p: &Processor) -> TokenStream {
    if p.timers.is_empty() {
        return TokenStream::new();
    }
    let pv = super::private(p);
    let mut arms = TokenStream::new();
    for timer in super::markers::unique_timers(p) {
        let Some(decl) = p.timers.iter().find(|t| std::ptr::eq(&t.timer, timer)) else {
            continue;
        };
        let value = quote_spanned!(timer.span()=> #pv::timer_value::<#timer>(payload)?);
        let caller = quote!(call_timer::<Self, #timer, <#timer as #pv::Timer>::Value, _, _>);
        let call = call(p, &decl.handler, value, caller);
        arms.extend(quote! {
            <#timer as #pv::Timer>::NAME => { #call }
        });
    }
    let signature = quote! {
        fn fire_timer<'a>(
            &'a self,
            ctx: &'a mut #pv::Context<'_, Self>,
            timer: &'a str,
            payload: &'a [u8],
        ) -> #pv::BoxFuture<'a, #pv::Result<(), #pv::CallbackError>>
    };
    matcher(p, signature, quote!(timer), arms)
}

/// A `Handlers` method with `signature` whose body matches `on` (a topic or a name) against
/// `arms`, one per handler; anything else is a "no handler" error.
fn matcher(
    p: &Processor,
    signature: TokenStream,
    on: TokenStream,
    arms: TokenStream,
) -> TokenStream {
    let pv = super::private(p);
    quote! {
        #signature {
            #[allow(unused_imports)]
            use #pv::{
                AsyncKind as _, BoxedAsyncKind as _, BoxedSyncKind as _, OtherKind as _,
                SyncKind as _,
            };
            #pv::Box::pin(async move {
                match #on {
                    #arms
                    other => #pv::Result::Err(#pv::CallbackError::no_handler(other)),
                }
            })
        }
    }
}

/// Decodes, calls the handler and awaits it if it is async. The call goes through `caller`
/// (a `__private::call_*` function), whose bounds check the handler's parameters for its
/// edge and report a mismatch at the user's `handler = ...`.
fn call(
    p: &Processor,
    handler: &syn::Path,
    decode: TokenStream,
    caller: TokenStream,
) -> TokenStream {
    let span = handler.span();
    let pv = super::private_at(p, span);
    // A wrong signature is reported at the handler's name, the last token of its path.
    let name = handler
        .segments
        .last()
        .map_or(span, |segment| segment.ident.span());
    let caller = super::respan(caller, name);
    let invoke = quote_spanned!(span=> #pv::#caller(#handler, self, ctx, message));
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
