//! The stead guest SDK: write an event-sourced entity as a plain Rust type.
//!
//! An entity is a type that implements [`EventSourced`]: it decides which
//! events a command produces ([`EventSourced::handle`]) and how an event
//! changes it ([`EventSourced::apply`]). [`export_entity!`] turns it into a
//! `stead:entity` WebAssembly component when compiled for `wasm32`; on native
//! targets it expands to nothing, so the same crate runs under `cargo test`
//! with the [`testkit`] (feature `testkit`).
//!
//! ```ignore
//! impl EventSourced for Account {
//!     const TYPE_NAME: &'static str = "account";
//!     const VERSION: &'static str = "0.1.0";
//!     type Command = AccountCommand;
//!     type Event = AccountEvent;
//!     type Reply = Balance;
//!     type Error = AccountError;
//!     type View = AccountView;
//!     fn initial(_id: &str) -> Self { Account::default() }
//!     fn handle(&self, ctx: &Context, cmd: AccountCommand)
//!         -> Result<Effect<AccountEvent, Balance>, AccountError> { /* ... */ }
//!     fn apply(&mut self, event: &AccountEvent) { /* ... */ }
//!     fn view(&self) -> AccountView { /* ... */ }
//! }
//! stead_sdk::export_entity!(Account);
//! ```
//!
//! Encodings (see [`codec`]): commands, events, replies and views are JSON,
//! because people type commands and read events; the state bytes the host
//! keeps for the guest use a compact binary encoding only the guest reads.

// Lets generated code name this crate `::stead_sdk` from inside it too.
extern crate self as stead_sdk;

mod entity;

pub mod codec;
pub mod log;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use entity::{Context, Effect, EventSourced, Persist, Send, TimerChange};

/// Not public API: the byte-level entry points shared by the wasm glue and the
/// test kit, and the wit-bindgen bindings used by [`export_entity!`].
#[doc(hidden)]
pub mod __private {
    pub mod abi;
    #[cfg(target_arch = "wasm32")]
    pub mod glue;
    #[cfg(target_arch = "wasm32")]
    pub use glue::{Adapter, bindings};
}

/// Exports an [`EventSourced`] type as the `stead:entity` component world.
///
/// On `wasm32` this generates the component's exports (`describe`,
/// `initial-state`, `handle-command`, `apply-event`, `view`); on any other
/// target it expands to nothing. Use it once per guest crate.
#[macro_export]
macro_rules! export_entity {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __SteadEntityAdapter = $crate::__private::Adapter<$ty>;
            $crate::__private::bindings::__stead_export_entity_world!(
                __SteadEntityAdapter with_types_in $crate::__private::bindings
            );
        };
    };
}
