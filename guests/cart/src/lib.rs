//! `cart`: a shopping cart entity.
//!
//! Add items by SKU and quantity, remove them, check out once; after checkout
//! the cart is final. Commands and events are externally tagged JSON, e.g.
//! `{"add_item":{"sku":"tea","quantity":2}}` (see README.md).

use core::fmt;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stead_sdk::{Context, Effect, EventSourced};

/// Longest SKU accepted, in bytes.
pub const MAX_SKU_LEN: usize = 64;

/// The cart's state: quantities by SKU, ordered so views are stable.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub items: BTreeMap<String, u32>,
    pub status: Status,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Open,
    /// Final: every command is rejected.
    CheckedOut,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CartCommand {
    AddItem { sku: String, quantity: u32 },
    RemoveItem { sku: String },
    Checkout {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartEvent {
    ItemAdded { sku: String, quantity: u32 },
    ItemRemoved { sku: String },
    CheckedOut { at_ms: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartError {
    ZeroQuantity,
    InvalidSku,
    QuantityOverflow { sku: String },
    NotInCart { sku: String },
    Empty,
    CheckedOut,
}

impl fmt::Display for CartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CartError::ZeroQuantity => f.write_str("quantity must be greater than zero"),
            CartError::InvalidSku => {
                write!(f, "sku must be 1 to {MAX_SKU_LEN} bytes and not blank")
            }
            CartError::QuantityOverflow { sku } => {
                write!(f, "quantity of {sku} would overflow")
            }
            CartError::NotInCart { sku } => write!(f, "item {sku} is not in the cart"),
            CartError::Empty => f.write_str("cannot check out an empty cart"),
            CartError::CheckedOut => f.write_str("cart is checked out"),
        }
    }
}

/// One line of the cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
}

/// What `get` shows, and the reply to every accepted command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartView {
    pub items: Vec<Line>,
    pub status: Status,
}

impl EventSourced for Cart {
    const TYPE_NAME: &'static str = "cart";
    const VERSION: &'static str = "0.1.0";
    const SNAPSHOT_EVERY: u32 = 50;

    type Command = CartCommand;
    type Event = CartEvent;
    type Reply = CartView;
    type Error = CartError;
    type View = CartView;

    fn initial(_id: &str) -> Self {
        Cart::default()
    }

    fn handle(
        &self,
        ctx: &Context,
        cmd: CartCommand,
    ) -> Result<Effect<CartEvent, CartView>, CartError> {
        if self.status == Status::CheckedOut {
            return Err(CartError::CheckedOut);
        }
        let event = match cmd {
            CartCommand::AddItem { sku, quantity } => {
                if sku.trim().is_empty() || sku.len() > MAX_SKU_LEN {
                    return Err(CartError::InvalidSku);
                }
                if quantity == 0 {
                    return Err(CartError::ZeroQuantity);
                }
                let held = self.items.get(&sku).copied().unwrap_or(0);
                if held.checked_add(quantity).is_none() {
                    return Err(CartError::QuantityOverflow { sku });
                }
                CartEvent::ItemAdded { sku, quantity }
            }
            CartCommand::RemoveItem { sku } => {
                if !self.items.contains_key(&sku) {
                    return Err(CartError::NotInCart { sku });
                }
                CartEvent::ItemRemoved { sku }
            }
            CartCommand::Checkout {} => {
                if self.items.is_empty() {
                    return Err(CartError::Empty);
                }
                CartEvent::CheckedOut {
                    at_ms: ctx.now_ms(),
                }
            }
        };
        let mut next = self.clone();
        next.apply(&event);
        Ok(Effect::persist(event).then_reply(next.view()))
    }

    fn apply(&mut self, event: &CartEvent) {
        match event {
            CartEvent::ItemAdded { sku, quantity } => {
                let held = self.items.entry(sku.clone()).or_insert(0);
                *held = held.saturating_add(*quantity);
            }
            CartEvent::ItemRemoved { sku } => {
                self.items.remove(sku);
            }
            CartEvent::CheckedOut { .. } => self.status = Status::CheckedOut,
        }
    }

    fn view(&self) -> CartView {
        CartView {
            items: self
                .items
                .iter()
                .map(|(sku, quantity)| Line {
                    sku: sku.clone(),
                    quantity: *quantity,
                })
                .collect(),
            status: self.status,
        }
    }
}

stead_sdk::export_entity!(Cart);

#[cfg(test)]
mod tests;
