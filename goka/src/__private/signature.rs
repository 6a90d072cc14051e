//! The check of a handler's parameters, done by the trait system so that a wrong signature
//! is one error at the user's `handler = ...` that says what the handler must take for its
//! edge, instead of rustc's own advice (which would rewrite the path inside the attribute).
//!
//! Generated code calls a handler through [`call_input`], [`call_optional`] or
//! [`call_loop`]. [`Handler`] learns the handler's parameters from its type alone (one impl
//! per arity; an fn item implements `Fn` for one arity only), and the edge's trait
//! ([`InputArgs`], [`OptionalInputArgs`], [`LoopArgs`]) then checks them. Each edge trait has
//! a second impl for a type no handler takes: with two candidates rustc does not infer the
//! parameters from the edge, so they come from the handler, and a mismatch is reported by the
//! edge trait, with its message, rather than as a type mismatch of the call.

use crate::context::Context;
use crate::processor::Group;
use crate::window::ClosedWindow;

/// A function of `Args`, called with them as a tuple.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a goka handler",
    label = "a handler is a method `fn(&self, ctx: &mut Context<'_, Self>, value: V)`, sync or async"
)]
pub trait Handler<Args> {
    /// What the function returns.
    type Output;
    /// Calls the function.
    fn call_with(&self, args: Args) -> Self::Output;
}

macro_rules! handler_arity {
    ($($arg:ident),*) => {
        impl<F, R, $($arg),*> Handler<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> R,
        {
            type Output = R;
            #[allow(non_snake_case)]
            fn call_with(&self, ($($arg,)*): ($($arg,)*)) -> R {
                self($($arg),*)
            }
        }
    };
}

handler_arity!();
handler_arity!(A);
handler_arity!(A, B);
handler_arity!(A, B, C);
handler_arity!(A, B, C, D);
handler_arity!(A, B, C, D, E);

/// A type no handler takes, for the second impl of each edge trait.
#[doc(hidden)]
#[derive(Debug)]
pub enum NotAParameter {}

/// The parameters of an `#[input]` handler of topic `T` whose values are `V`.
#[diagnostic::on_unimplemented(
    message = "this is not a handler of `{T}`: it takes `{Self}`",
    label = "an #[input] handler of `{T}` is `fn(&self, ctx: &mut Context<'_, Self>, value: {V})`, sync or async",
    note = "the value comes by value, as `{V}`, not by reference, and nothing comes after it",
    note = "a handler that takes `Option<{V}>` (`None` for a tombstone) needs `nil_handling = \"process\"` on the processor"
)]
pub trait InputArgs<'a, 'b, 'c, G: Group, T, V>: Sized {
    /// The arguments of the call.
    fn new(group: &'a G, ctx: &'b mut Context<'c, G>, value: V) -> Self;
}

/// The parameters of an `#[input]` handler of topic `T` under `nil_handling = "process"`.
#[diagnostic::on_unimplemented(
    message = "this is not a handler of `{T}` under `nil_handling = \"process\"`: it takes `{Self}`",
    label = "with `nil_handling = \"process\"`, an #[input] handler of `{T}` is `fn(&self, ctx: &mut Context<'_, Self>, value: Option<{V}>)`",
    note = "`nil_handling = \"process\"` hands each tombstone to the handler as `None`; without it, tombstones are skipped and handlers take `{V}`"
)]
pub trait OptionalInputArgs<'a, 'b, 'c, G: Group, T, V>: Sized {
    /// The arguments of the call.
    fn new(group: &'a G, ctx: &'b mut Context<'c, G>, value: Option<V>) -> Self;
}

/// The parameters of the `#[loopback]` handler of group `G`, whose loop values are `V`.
#[diagnostic::on_unimplemented(
    message = "this is not the loopback handler of `{G}`: it takes `{Self}`",
    label = "a #[loopback] handler is `fn(&self, ctx: &mut Context<'_, Self>, value: {V})`, `{V}` being the loopback's `value`",
    note = "the value comes by value, as `{V}`, not by reference, and nothing comes after it"
)]
pub trait LoopArgs<'a, 'b, 'c, G: Group, V>: Sized {
    /// The arguments of the call.
    fn new(group: &'a G, ctx: &'b mut Context<'c, G>, value: V) -> Self;
}

/// The parameters of the `#[visit]` handler of visitor `T`, whose values are `V`.
#[diagnostic::on_unimplemented(
    message = "this is not a visit handler of `{T}`: it takes `{Self}`",
    label = "a #[visit] handler of `{T}` is `fn(&self, ctx: &mut Context<'_, Self>, value: {V})`, sync or async",
    note = "the visitor's value comes by value, as `{V}`, and nothing comes after it"
)]
pub trait VisitArgs<'a, 'b, 'c, G: Group, T, V>: Sized {
    /// The arguments of the call.
    fn new(group: &'a G, ctx: &'b mut Context<'c, G>, value: V) -> Self;
}

/// The parameters of the `on_close` handler of window `T`, whose values are `V`.
#[diagnostic::on_unimplemented(
    message = "this is not an on_close handler of `{T}`: it takes `{Self}`",
    label = "an on_close handler of `{T}` is `fn(&self, ctx: &mut Context<'_, Self>, closed: ClosedWindow<{V}>)`, sync or async",
    note = "`ClosedWindow` (in `goka::window`) holds the window's range and final value"
)]
pub trait CloseArgs<'a, 'b, 'c, G: Group, T, V>: Sized {
    /// The arguments of the call.
    fn new(group: &'a G, ctx: &'b mut Context<'c, G>, value: ClosedWindow<V>) -> Self;
}

/// The parameters of the `#[timer]` handler of timer `T`, whose payloads are `V`.
#[diagnostic::on_unimplemented(
    message = "this is not a handler of the timer `{T}`: it takes `{Self}`",
    label = "a #[timer] handler of `{T}` is `fn(&self, ctx: &mut Context<'_, Self>, payload: {V})`, sync or async",
    note = "the payload comes by value, as `{V}`; `ctx.timestamp()` is the time the timer was set for"
)]
pub trait TimerArgs<'a, 'b, 'c, G: Group, T, V>: Sized {
    /// The arguments of the call.
    fn new(group: &'a G, ctx: &'b mut Context<'c, G>, value: V) -> Self;
}

macro_rules! edge_args {
    ($trait:ident [$($param:ident),*], $value:ty) => {
        #[diagnostic::do_not_recommend]
        impl<'a, 'b, 'c, G: Group, $($param),*> $trait<'a, 'b, 'c, G, $($param),*>
            for (&'a G, &'b mut Context<'c, G>, $value)
        {
            fn new(group: &'a G, ctx: &'b mut Context<'c, G>, value: $value) -> Self {
                (group, ctx, value)
            }
        }

        #[diagnostic::do_not_recommend]
        impl<'a, 'b, 'c, G: Group, $($param),*> $trait<'a, 'b, 'c, G, $($param),*>
            for (NotAParameter, NotAParameter, NotAParameter)
        {
            fn new(_: &'a G, _: &'b mut Context<'c, G>, value: $value) -> Self {
                drop(value);
                unreachable!("no handler takes NotAParameter")
            }
        }
    };
}

edge_args!(InputArgs[T, V], V);
edge_args!(OptionalInputArgs[T, V], Option<V>);
edge_args!(LoopArgs[V], V);
edge_args!(VisitArgs[T, V], V);
edge_args!(CloseArgs[T, V], ClosedWindow<V>);
edge_args!(TimerArgs[T, V], V);

// The `call_*` functions are written out, not made by a macro: a wrong handler's error
// shows the bound of the function it was called through, which a macro would show as its
// own template.

/// Calls the `#[visit]` handler of visitor `T` with the visit's value.
pub fn call_visit<'a, 'b, 'c, G, T, V, Args, F>(
    handler: F,
    group: &'a G,
    ctx: &'b mut Context<'c, G>,
    value: V,
) -> F::Output
where
    G: Group,
    F: Handler<Args>,
    Args: VisitArgs<'a, 'b, 'c, G, T, V>,
{
    handler.call_with(Args::new(group, ctx, value))
}

/// Calls the `on_close` handler of window `T` with a window's final value.
pub fn call_close<'a, 'b, 'c, G, T, V, Args, F>(
    handler: F,
    group: &'a G,
    ctx: &'b mut Context<'c, G>,
    closed: ClosedWindow<V>,
) -> F::Output
where
    G: Group,
    F: Handler<Args>,
    Args: CloseArgs<'a, 'b, 'c, G, T, V>,
{
    handler.call_with(Args::new(group, ctx, closed))
}

/// Calls the `#[timer]` handler of timer `T` with its payload.
pub fn call_timer<'a, 'b, 'c, G, T, V, Args, F>(
    handler: F,
    group: &'a G,
    ctx: &'b mut Context<'c, G>,
    payload: V,
) -> F::Output
where
    G: Group,
    F: Handler<Args>,
    Args: TimerArgs<'a, 'b, 'c, G, T, V>,
{
    handler.call_with(Args::new(group, ctx, payload))
}

/// Calls the `#[input]` handler of topic `T` with a message's value.
pub fn call_input<'a, 'b, 'c, G, T, V, Args, F>(
    handler: F,
    group: &'a G,
    ctx: &'b mut Context<'c, G>,
    value: V,
) -> F::Output
where
    G: Group,
    F: Handler<Args>,
    Args: InputArgs<'a, 'b, 'c, G, T, V>,
{
    handler.call_with(Args::new(group, ctx, value))
}

/// Calls the `#[input]` handler of topic `T` with a message's value or `None` for a
/// tombstone.
pub fn call_optional<'a, 'b, 'c, G, T, V, Args, F>(
    handler: F,
    group: &'a G,
    ctx: &'b mut Context<'c, G>,
    value: Option<V>,
) -> F::Output
where
    G: Group,
    F: Handler<Args>,
    Args: OptionalInputArgs<'a, 'b, 'c, G, T, V>,
{
    handler.call_with(Args::new(group, ctx, value))
}

/// Calls the `#[loopback]` handler with a loop message's value.
pub fn call_loop<'a, 'b, 'c, G, V, Args, F>(
    handler: F,
    group: &'a G,
    ctx: &'b mut Context<'c, G>,
    value: V,
) -> F::Output
where
    G: Group,
    F: Handler<Args>,
    Args: LoopArgs<'a, 'b, 'c, G, V>,
{
    handler.call_with(Args::new(group, ctx, value))
}
