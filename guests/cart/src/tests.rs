//! Every command of `cart`, accepted and rejected, through the test kit.

use super::*;
use CartCommand as C;
use CartEvent as E;
use serde_json::json;
use stead_sdk::testkit::TestKit;

fn added(sku: &str, quantity: u32) -> E {
    E::ItemAdded {
        sku: sku.into(),
        quantity,
    }
}

fn add(sku: &str, quantity: u32) -> C {
    C::AddItem {
        sku: sku.into(),
        quantity,
    }
}

fn checked_out_cart() -> TestKit<Cart> {
    TestKit::new("cart-1").given([added("tea", 1), E::CheckedOut { at_ms: 1 }])
}

#[test]
fn add_item_puts_it_in_the_cart_and_replies_the_cart() {
    TestKit::<Cart>::new("cart-1")
        .when_json(r#"{"add_item":{"sku":"tea","quantity":2}}"#)
        .expect_events(&[added("tea", 2)])
        .expect_reply(&json!({"items": [{"sku": "tea", "quantity": 2}], "status": "open"}));
}

#[test]
fn adding_the_same_sku_again_adds_to_its_quantity() {
    TestKit::<Cart>::new("cart-1")
        .given([added("tea", 2)])
        .when(add("tea", 3))
        .expect_events(&[added("tea", 3)])
        .expect_state(|s| assert_eq!(s.items["tea"], 5));
}

#[test]
fn add_item_with_zero_quantity_is_rejected() {
    TestKit::<Cart>::new("cart-1")
        .when_json(r#"{"add_item":{"sku":"tea","quantity":0}}"#)
        .expect_rejected("quantity must be greater than zero");
}

#[test]
fn add_item_with_a_blank_or_overlong_sku_is_rejected() {
    let mut kit = TestKit::<Cart>::new("cart-1");
    kit.when(add("  ", 1))
        .expect_rejected("sku must be 1 to 64 bytes and not blank");
    kit.when(add(&"x".repeat(65), 1))
        .expect_rejected("sku must be 1 to 64 bytes and not blank");
}

#[test]
fn add_item_whose_quantity_would_overflow_is_rejected() {
    TestKit::<Cart>::new("cart-1")
        .given([added("tea", u32::MAX)])
        .when(add("tea", 1))
        .expect_rejected("quantity of tea would overflow");
}

#[test]
fn add_item_with_a_negative_quantity_is_an_invalid_command() {
    TestKit::<Cart>::new("cart-1")
        .when_json(r#"{"add_item":{"sku":"tea","quantity":-1}}"#)
        .expect_invalid_command("invalid value");
}

#[test]
fn add_item_after_checkout_is_rejected() {
    checked_out_cart()
        .when(add("tea", 1))
        .expect_rejected("cart is checked out");
}

#[test]
fn remove_item_takes_it_out() {
    TestKit::<Cart>::new("cart-1")
        .given([added("tea", 2), added("jam", 1)])
        .when_json(r#"{"remove_item":{"sku":"tea"}}"#)
        .expect_events(&[E::ItemRemoved { sku: "tea".into() }])
        .expect_reply(&json!({"items": [{"sku": "jam", "quantity": 1}], "status": "open"}));
}

#[test]
fn remove_item_not_in_the_cart_is_rejected() {
    TestKit::<Cart>::new("cart-1")
        .given([added("jam", 1)])
        .when(C::RemoveItem { sku: "tea".into() })
        .expect_rejected("item tea is not in the cart");
}

#[test]
fn remove_item_after_checkout_is_rejected() {
    checked_out_cart()
        .when(C::RemoveItem { sku: "tea".into() })
        .expect_rejected("cart is checked out");
}

#[test]
fn checkout_records_the_time_and_closes_the_cart() {
    TestKit::<Cart>::new("cart-1")
        .given([added("tea", 2)])
        .at_time(1_234)
        .when_json(r#"{"checkout":{}}"#)
        .expect_events(&[E::CheckedOut { at_ms: 1_234 }])
        .expect_reply(&json!({"items": [{"sku": "tea", "quantity": 2}], "status": "checked_out"}))
        .expect_state(|s| assert_eq!(s.status, Status::CheckedOut));
}

#[test]
fn checkout_of_an_empty_cart_is_rejected() {
    TestKit::<Cart>::new("cart-1")
        .when(C::Checkout {})
        .expect_rejected("cannot check out an empty cart");
}

#[test]
fn checkout_after_everything_was_removed_is_rejected() {
    TestKit::<Cart>::new("cart-1")
        .given([added("tea", 1), E::ItemRemoved { sku: "tea".into() }])
        .when(C::Checkout {})
        .expect_rejected("cannot check out an empty cart");
}

#[test]
fn checkout_twice_is_rejected() {
    checked_out_cart()
        .when(C::Checkout {})
        .expect_rejected("cart is checked out");
}

#[test]
fn view_lists_items_by_sku_and_the_status() {
    let kit = TestKit::<Cart>::new("cart-1").given([added("tea", 2), added("jam", 1)]);
    assert_eq!(
        kit.view(),
        json!({"items": [{"sku": "jam", "quantity": 1}, {"sku": "tea", "quantity": 2}], "status": "open"})
    );
}

#[test]
fn unknown_commands_are_invalid_with_the_decoders_message() {
    let mut kit = TestKit::<Cart>::new("cart-1");
    kit.when_json(r#"{"empty":{}}"#)
        .expect_invalid_command("unknown variant `empty`");
    kit.when_json(r#"{"add_item":{"sku":"tea"}}"#)
        .expect_invalid_command("missing field `quantity`");
    assert_eq!(kit.seq_nr(), 0);
}
