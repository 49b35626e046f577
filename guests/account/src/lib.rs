//! `account`: a bank account entity.
//!
//! Open it for an owner, deposit and withdraw integer amounts (minor units),
//! close it once its balance is zero. Commands and events are externally
//! tagged JSON, e.g. `{"deposit":{"amount":100}}` (see README.md).

mod entity;

pub use entity::*;

stead_sdk::export_entity!(Account);

#[cfg(test)]
mod tests;
