//! The `GroupGraph` const: the same value the runtime validates and users inspect.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::Processor;

pub fn graph(p: &Processor) -> TokenStream {
    let pv = super::private(p);
    let group = p.group_name();
    let edges = |kind: TokenStream, topics: Vec<&syn::Type>| quote!(&[#(#pv::topic_edge::<#topics>(#pv::EdgeKind::#kind)),*]);
    let inputs = edges(
        quote!(Input),
        super::unique_inputs(p).map(|(_, t)| t).collect(),
    );
    let joins = edges(quote!(Join), p.joins.iter().map(|t| &t.topic).collect());
    let lookups = edges(quote!(Lookup), p.lookups.iter().map(|t| &t.topic).collect());
    let outputs = edges(quote!(Output), p.outputs.iter().map(|t| &t.topic).collect());
    // Value and codec through the marker impls, whose bounds already check that they fit.
    let loopback = match p.loopbacks.first() {
        Some(_) => {
            let topic = p.loop_topic();
            quote!(#pv::Option::Some(#pv::loop_edge::<Self>(#topic)))
        }
        None => quote!(#pv::Option::None),
    };
    let table = match p.persists.first() {
        Some(_) => {
            let topic = p.table_topic();
            quote!(#pv::Option::Some(#pv::table_edge::<Self>(#topic)))
        }
        None => quote!(#pv::Option::None),
    };
    // `<group>-<name>-window`, assembled at compile time from the window's declaration.
    let windows = p.windows.iter().filter(|w| {
        super::markers::unique_windows(p).any(|u| std::ptr::eq(u, &w.window))
    }).map(|w| {
        let window = &w.window;
        let on_close = w.on_close.is_some();
        quote! {
            #pv::window_edge::<Self, #window>({
                const LEN: usize = #pv::window_topic_len(#group, <#window as #pv::Window>::NAME);
                const BYTES: [u8; LEN] = #pv::window_topic::<LEN>(#group, <#window as #pv::Window>::NAME);
                #pv::topic_str(&BYTES)
            }, #on_close)
        }
    });
    let timers: Vec<_> = super::markers::unique_timers(p).collect();
    let timer_edge = if timers.is_empty() {
        quote!(#pv::Option::None)
    } else {
        let topic = format!("{group}-timers");
        quote!(#pv::Option::Some(#pv::timer_edge::<Self>(#topic)))
    };
    let timer_names = quote!(&[#(<#timers as #pv::Timer>::NAME),*]);
    let table_suffix = p.table_suffix.as_ref().map(|s| quote!(table_suffix: #s,));
    let loop_suffix = p.loop_suffix.as_ref().map(|s| quote!(loop_suffix: #s,));
    quote! {
        #pv::GroupGraph {
            inputs: #inputs,
            joins: #joins,
            lookups: #lookups,
            outputs: #outputs,
            loopback: #loopback,
            table: #table,
            windows: &[#(#windows),*],
            timers: #timer_edge,
            timer_names: #timer_names,
            #table_suffix
            #loop_suffix
            ..#pv::GroupGraph::new(#group)
        }
    }
}
