//! The stead host: runs entity components behind the `stead:entity` WIT
//! contract and owns everything stateful around them.
//!
//! Modules (see ARCHITECTURE.md for the map and its invariants):
//! - [`component`]: building guest crates into components and validating
//!   components against the contract.

pub mod component;
