//! Every command of `account`, accepted and rejected, through the test kit.

use super::*;
use AccountCommand as C;
use AccountEvent as E;
use stead_sdk::testkit::TestKit;

fn opened(owner: &str) -> E {
    E::Opened {
        owner: owner.into(),
    }
}

fn open_with(balance: u64) -> TestKit<Account> {
    let mut events = vec![opened("ada")];
    if balance > 0 {
        events.push(E::Deposited { amount: balance });
    }
    TestKit::new("acc-1").given(events)
}

#[test]
fn open_records_the_owner_and_replies_a_zero_balance() {
    TestKit::<Account>::new("acc-1")
        .when(C::Open {
            owner: "ada".into(),
        })
        .expect_events(&[opened("ada")])
        .expect_reply(&Balance { balance: 0 })
        .expect_state(|s| {
            assert_eq!(s.owner.as_deref(), Some("ada"));
            assert_eq!(s.status, Status::Open);
        });
}

#[test]
fn open_typed_as_json_is_accepted() {
    TestKit::<Account>::new("acc-1")
        .when_json(r#"{"open":{"owner":"ada"}}"#)
        .expect_events(&[opened("ada")]);
}

#[test]
fn open_twice_is_rejected() {
    open_with(0)
        .when(C::Open {
            owner: "bob".into(),
        })
        .expect_rejected("account is already open");
}

#[test]
fn open_with_a_blank_owner_is_rejected() {
    TestKit::<Account>::new("acc-1")
        .when(C::Open { owner: " ".into() })
        .expect_rejected("owner must not be empty");
}

#[test]
fn open_after_close_is_rejected() {
    TestKit::<Account>::new("acc-1")
        .given([opened("ada"), E::Closed {}])
        .when(C::Open {
            owner: "ada".into(),
        })
        .expect_rejected("account is closed");
}

#[test]
fn deposit_adds_to_the_balance() {
    open_with(50)
        .when_json(r#"{"deposit":{"amount":100}}"#)
        .expect_events(&[E::Deposited { amount: 100 }])
        .expect_reply(&Balance { balance: 150 })
        .expect_state(|s| assert_eq!(s.balance, 150));
}

#[test]
fn deposit_before_open_is_rejected() {
    TestKit::<Account>::new("acc-1")
        .when(C::Deposit { amount: 1 })
        .expect_rejected("account is not open");
}

#[test]
fn deposit_of_zero_is_rejected() {
    open_with(0)
        .when(C::Deposit { amount: 0 })
        .expect_rejected("amount must be greater than zero");
}

#[test]
fn deposit_that_would_overflow_is_rejected() {
    open_with(u64::MAX)
        .when(C::Deposit { amount: 1 })
        .expect_rejected("deposit would overflow the balance");
}

#[test]
fn deposit_into_a_closed_account_is_rejected() {
    TestKit::<Account>::new("acc-1")
        .given([opened("ada"), E::Closed {}])
        .when(C::Deposit { amount: 5 })
        .expect_rejected("account is closed");
}

#[test]
fn withdraw_takes_from_the_balance() {
    open_with(100)
        .when_json(r#"{"withdraw":{"amount":30}}"#)
        .expect_events(&[E::Withdrawn { amount: 30 }])
        .expect_reply(&Balance { balance: 70 });
}

#[test]
fn withdraw_the_whole_balance_is_accepted() {
    open_with(100)
        .when(C::Withdraw { amount: 100 })
        .expect_reply(&Balance { balance: 0 });
}

#[test]
fn withdraw_more_than_the_balance_is_rejected_and_changes_nothing() {
    open_with(70)
        .when(C::Withdraw { amount: 100 })
        .expect_rejected("insufficient funds: balance is 70, withdrawal is 100")
        .expect_state(|s| assert_eq!(s.balance, 70));
}

#[test]
fn withdraw_from_a_closed_account_is_rejected() {
    TestKit::<Account>::new("acc-1")
        .given([opened("ada"), E::Closed {}])
        .when(C::Withdraw { amount: 1 })
        .expect_rejected("account is closed");
}

#[test]
fn withdraw_before_open_is_rejected() {
    TestKit::<Account>::new("acc-1")
        .when(C::Withdraw { amount: 1 })
        .expect_rejected("account is not open");
}

#[test]
fn withdraw_of_zero_is_rejected() {
    open_with(10)
        .when(C::Withdraw { amount: 0 })
        .expect_rejected("amount must be greater than zero");
}

#[test]
fn close_with_zero_balance_is_accepted() {
    let mut kit = open_with(0);
    kit.when_json(r#"{"close":{}}"#)
        .expect_events(&[E::Closed {}])
        .expect_reply(&Balance { balance: 0 })
        .expect_state(|s| assert_eq!(s.status, Status::Closed));
    assert_eq!(
        kit.view(),
        serde_json::json!({"owner": "ada", "balance": 0, "status": "closed"})
    );
}

#[test]
fn close_with_a_balance_is_rejected() {
    open_with(70)
        .when(C::Close {})
        .expect_rejected("cannot close: balance is 70, not zero");
}

#[test]
fn close_twice_is_rejected() {
    TestKit::<Account>::new("acc-1")
        .given([opened("ada"), E::Closed {}])
        .when(C::Close {})
        .expect_rejected("account is closed");
}

#[test]
fn close_before_open_is_rejected() {
    TestKit::<Account>::new("acc-1")
        .when(C::Close {})
        .expect_rejected("account is not open");
}

#[test]
fn view_shows_owner_balance_and_status() {
    let kit = open_with(42);
    assert_eq!(
        kit.view(),
        serde_json::json!({"owner": "ada", "balance": 42, "status": "open"})
    );
    assert_eq!(
        TestKit::<Account>::new("x").view(),
        serde_json::json!({"owner": null, "balance": 0, "status": "new"})
    );
}

#[test]
fn unknown_or_malformed_commands_are_invalid_with_the_decoders_message() {
    let mut kit = open_with(0);
    kit.when_json(r#"{"transfer":{"amount":1}}"#)
        .expect_invalid_command("unknown variant `transfer`");
    kit.when_json(r#"{"deposit":{"amount":-5}}"#)
        .expect_invalid_command("invalid value");
    kit.when_json(r#"{"deposit":{}}"#)
        .expect_invalid_command("missing field `amount`");
    kit.when_json(r#"{"deposit":{"amount":1,"memo":"x"}}"#)
        .expect_invalid_command("unknown field `memo`");
    assert_eq!(kit.seq_nr(), 1, "invalid commands persist nothing");
}

#[test]
fn a_session_of_commands_reaches_the_expected_state() {
    let mut kit = TestKit::<Account>::new("acc-7");
    kit.when_json(r#"{"open":{"owner":"ada"}}"#);
    kit.when_json(r#"{"deposit":{"amount":100}}"#);
    kit.when_json(r#"{"withdraw":{"amount":30}}"#)
        .expect_reply(&Balance { balance: 70 });
    kit.when_json(r#"{"withdraw":{"amount":100}}"#)
        .expect_rejected("insufficient funds: balance is 70, withdrawal is 100");
    assert_eq!(kit.seq_nr(), 3);
    assert_eq!(kit.state().balance, 70);
}
