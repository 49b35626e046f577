//! The linearizability checker's tests: what it must accept and what it
//! must catch.

use super::*;
use crate::history::Operation;
use crate::testing::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn violation(history: &History) -> Violation {
    check_linearizable(history).expect_err("a violation")
}

fn assert_linearizable(history: &History) -> LinearizabilityReport {
    let report =
        check_linearizable(history).unwrap_or_else(|v| panic!("expected linearizable, got:\n{v}"));
    assert!(report.is_conclusive(), "{report:?}");
    report
}

/// An account `a` opened by ann at [0, 10] (seq-nr 1).
fn opened() -> Builder {
    let mut b = Builder::new();
    b.at(1, open("ann"), 0, 10, ok(0, 1));
    b
}

#[test]
fn the_empty_history_is_linearizable() {
    let report = assert_linearizable(&History::new());
    assert!(report.entities.is_empty());
}

#[test]
fn a_sequential_history_of_the_model_is_linearizable() {
    let mut b = opened();
    b.at(1, deposit(5), 20, 30, ok(5, 2));
    b.at(
        2,
        withdraw(7),
        40,
        50,
        rejected("insufficient funds: balance is 5, withdrawal is 7"),
    );
    b.at(1, withdraw(5), 60, 70, ok(0, 3));
    b.at(2, view(), 80, 90, viewed("ann", 0, "open"));
    b.at(1, close(), 100, 110, ok(0, 4));
    b.at(1, deposit(1), 120, 130, rejected("account is closed"));
    let report = assert_linearizable(&b.history);
    assert_eq!(report.entities[0].operations, 7);
}

#[test]
fn a_lost_deposit_is_not_linearizable() {
    let mut b = opened();
    b.at(1, deposit(5), 20, 30, ok(5, 2));
    // Answered as if the first deposit never happened.
    b.at(2, deposit(3), 40, 50, ok(3, 2));
    let v = violation(&b.history);
    assert_eq!(v.kind, ViolationKind::NotLinearizable);
    assert_eq!(v.operations, vec![2]);
    assert!(v.explanation.contains("balance 8 seq-nr 3"), "{v}");
}

#[test]
fn a_stale_view_after_an_acknowledged_deposit_is_caught() {
    let mut b = opened();
    b.at(1, deposit(5), 20, 30, ok(5, 2));
    b.at(2, view(), 40, 50, viewed("ann", 0, "open"));
    let v = violation(&b.history);
    assert_eq!(v.kind, ViolationKind::NotLinearizable);
    assert_eq!(v.operations, vec![2]);
}

#[test]
fn a_view_concurrent_with_a_deposit_may_see_either_balance() {
    for seen in [0, 5] {
        let mut b = opened();
        b.at(1, deposit(5), 20, 40, ok(5, 2));
        b.at(2, view(), 30, 50, viewed("ann", seen, "open"));
        assert_linearizable(&b.history);
    }
}

#[test]
fn concurrent_operations_may_linearize_in_either_order() {
    for (first, second) in [((5, 2), (8, 3)), ((8, 3), (3, 2))] {
        let mut b = opened();
        b.at(1, deposit(5), 20, 40, ok(first.0, first.1));
        b.at(2, deposit(3), 25, 45, ok(second.0, second.1));
        b.at(3, view(), 50, 60, viewed("ann", 8, "open"));
        assert_linearizable(&b.history);
    }
}

#[test]
fn real_time_order_is_respected() {
    // Sequential deposits answered as if in the opposite order.
    let mut b = opened();
    b.at(1, deposit(5), 20, 30, ok(8, 3));
    b.at(2, deposit(3), 40, 50, ok(3, 2));
    assert_eq!(violation(&b.history).kind, ViolationKind::NotLinearizable);
}

#[test]
fn an_unknown_outcome_may_have_taken_effect_or_not() {
    for seen in [0, 5] {
        let mut b = opened();
        b.at(1, deposit(5), 20, 30, unknown());
        b.at(2, view(), 40, 50, viewed("ann", seen, "open"));
        assert_linearizable(&b.history);
    }
    // Not yet, then later: its window never closes.
    let mut b = opened();
    b.at(1, deposit(5), 20, 30, unknown());
    b.at(2, view(), 40, 50, viewed("ann", 0, "open"));
    b.at(2, view(), 60, 70, viewed("ann", 5, "open"));
    b.at(2, deposit(1), 80, 90, ok(6, 3));
    assert_linearizable(&b.history);
    // But it takes effect once: an effect cannot be undone.
    b.at(2, view(), 100, 110, viewed("ann", 1, "open"));
    assert_eq!(violation(&b.history).kind, ViolationKind::NotLinearizable);
}

#[test]
fn an_unknown_outcome_cannot_take_effect_before_it_was_sent() {
    let mut b = opened();
    b.at(2, view(), 20, 30, viewed("ann", 5, "open"));
    b.at(1, deposit(5), 40, 50, unknown());
    assert_eq!(violation(&b.history).kind, ViolationKind::NotLinearizable);
}

#[test]
fn an_unknown_outcome_that_the_account_would_refuse_is_no_effect() {
    let mut b = opened();
    b.at(1, withdraw(50), 20, 30, unknown());
    b.at(2, deposit(5), 40, 50, ok(5, 2));
    assert_linearizable(&b.history);
}

#[test]
fn a_failed_operation_is_ignored() {
    let mut b = opened();
    b.at(1, deposit(5), 20, 30, failed());
    b.at(2, view(), 40, 50, viewed("ann", 0, "open"));
    assert_linearizable(&b.history);
}

#[test]
fn a_deposit_applied_twice_under_one_key_is_caught() {
    let mut b = opened();
    b.with_id("k", 1, deposit(5), 20, 30, ok(5, 2));
    b.with_id("k", 2, deposit(5), 40, 50, ok(10, 3));
    let v = violation(&b.history);
    assert_eq!(v.kind, ViolationKind::AppliedTwice);
    assert_eq!(v.operations, vec![1, 2]);
    assert!(v.to_string().contains("\"k\""), "{v}");
}

#[test]
fn a_retry_answered_as_a_duplicate_adds_no_effect() {
    let mut b = opened();
    b.with_id("k", 1, deposit(5), 20, 30, ok(5, 2));
    b.with_id("k", 2, deposit(5), 40, 50, dup(5, 2));
    b.at(3, view(), 60, 70, viewed("ann", 5, "open"));
    assert_linearizable(&b.history);
    // A view that counted the retry's deposit too is caught.
    b.at(3, view(), 80, 90, viewed("ann", 10, "open"));
    assert_eq!(violation(&b.history).kind, ViolationKind::NotLinearizable);
}

#[test]
fn a_duplicate_answer_that_differs_from_the_original_is_caught() {
    let mut b = opened();
    b.with_id("k", 1, deposit(5), 20, 30, ok(5, 2));
    b.with_id("k", 2, deposit(5), 40, 50, dup(10, 3));
    let v = violation(&b.history);
    assert_eq!(v.kind, ViolationKind::DuplicateMismatch);
    assert_eq!(v.operations, vec![1, 2]);
}

#[test]
fn a_duplicate_answered_before_the_command_was_applied_is_caught() {
    let mut b = opened();
    b.with_id("k", 2, deposit(5), 20, 30, dup(5, 2));
    b.with_id("k", 1, deposit(5), 40, 50, ok(5, 2));
    let v = violation(&b.history);
    assert_eq!(v.kind, ViolationKind::DuplicateMismatch);
    assert_eq!(v.operations, vec![1, 2]);
}

#[test]
fn a_duplicate_whose_original_answer_was_lost_is_linearizable() {
    // The first attempt applied it; the retry within the same operation
    // was answered as a duplicate.
    let mut b = opened();
    b.with_id("k", 1, deposit(5), 20, 60, dup(5, 2));
    b.at(2, view(), 70, 80, viewed("ann", 5, "open"));
    assert_linearizable(&b.history);
    // Another client's earlier unknown attempt under the same id may
    // have been the one applying it.
    let mut b = opened();
    b.with_id("k", 2, deposit(5), 20, 25, unknown());
    b.at(3, view(), 30, 35, viewed("ann", 5, "open"));
    b.with_id("k", 1, deposit(5), 40, 50, dup(5, 2));
    assert_linearizable(&b.history);
}

#[test]
fn a_command_id_reused_for_another_command_is_malformed() {
    let mut b = opened();
    b.with_id("k", 1, deposit(5), 20, 30, ok(5, 2));
    b.with_id("k", 2, withdraw(5), 40, 50, unknown());
    assert_eq!(violation(&b.history).kind, ViolationKind::Malformed);
}

#[test]
fn a_rejection_inconsistent_with_the_state_is_caught() {
    let mut b = opened();
    b.at(1, deposit(5), 20, 30, ok(5, 2));
    b.at(2, deposit(5), 40, 50, rejected("account is not open"));
    let v = violation(&b.history);
    assert_eq!(v.kind, ViolationKind::NotLinearizable);
    assert!(v.explanation.contains("accepts it here"), "{v}");
    // A balance named in the reason must be the account's.
    let mut b = opened();
    b.at(1, deposit(5), 20, 30, ok(5, 2));
    b.at(
        2,
        withdraw(9),
        40,
        50,
        rejected("insufficient funds: balance is 4, withdrawal is 9"),
    );
    assert_eq!(violation(&b.history).kind, ViolationKind::NotLinearizable);
}

#[test]
fn a_rejection_consistent_with_some_point_of_its_window_is_accepted() {
    let mut b = opened();
    b.at(1, deposit(5), 20, 40, ok(5, 2));
    b.at(
        2,
        withdraw(3),
        25,
        45,
        rejected("insufficient funds: balance is 0, withdrawal is 3"),
    );
    assert_linearizable(&b.history);
    // Either of two valid reasons is accepted.
    let mut b = Builder::new();
    b.at(
        1,
        deposit(0),
        0,
        10,
        rejected("amount must be greater than zero"),
    );
    b.at(1, deposit(0), 20, 30, rejected("account is not open"));
    assert_linearizable(&b.history);
}

#[test]
fn a_retried_refusal_is_one_refusal_placed_at_its_first_try() {
    // The first try was refused at balance 0 (its answer lost); the retry,
    // after a deposit, gets the remembered refusal, not a new decision.
    let mut b = opened();
    let short = "insufficient funds: balance is 0, withdrawal is 3";
    b.with_id("k", 1, withdraw(3), 20, 25, unknown());
    b.at(2, deposit(5), 30, 40, ok(5, 2));
    b.with_id("k", 1, withdraw(3), 50, 60, rejected(short));
    b.with_id("k", 3, withdraw(3), 70, 80, rejected(short));
    assert_linearizable(&b.history);
    // Without the first try, the retry's window sees only balance 5.
    let mut b = opened();
    b.at(2, deposit(5), 30, 40, ok(5, 2));
    b.with_id("k", 1, withdraw(3), 50, 60, rejected(short));
    assert_eq!(violation(&b.history).kind, ViolationKind::NotLinearizable);
}

#[test]
fn an_id_both_refused_and_applied_or_refused_for_two_reasons_is_caught() {
    let mut b = opened();
    b.with_id(
        "k",
        1,
        withdraw(3),
        20,
        30,
        rejected("insufficient funds: balance is 0, withdrawal is 3"),
    );
    b.at(2, deposit(5), 40, 50, ok(5, 2));
    b.with_id("k", 1, withdraw(3), 60, 70, ok(2, 3));
    let v = violation(&b.history);
    assert_eq!(v.kind, ViolationKind::DuplicateMismatch);
    let mut b = opened();
    b.with_id(
        "k",
        1,
        withdraw(3),
        20,
        30,
        rejected("insufficient funds: balance is 0, withdrawal is 3"),
    );
    b.with_id("k", 2, withdraw(3), 40, 50, rejected("account is not open"));
    assert_eq!(violation(&b.history).kind, ViolationKind::DuplicateMismatch);
}

#[test]
fn a_rejection_no_state_explains_is_caught_without_a_search() {
    let mut b = opened();
    b.at(2, deposit(5), 20, 30, rejected("insufficient funds"));
    let v = violation(&b.history);
    assert_eq!(v.kind, ViolationKind::NotLinearizable);
    assert_eq!(v.operations, vec![1]);
}

#[test]
fn an_unrecognised_rejection_reason_is_malformed() {
    let mut b = opened();
    b.at(2, deposit(5), 20, 30, rejected("the moon is full"));
    assert_eq!(violation(&b.history).kind, ViolationKind::Malformed);
}

#[test]
fn a_seq_nr_that_skips_or_repeats_is_caught() {
    for seq_nr in [2, 4] {
        let mut b = opened();
        b.at(1, deposit(5), 20, 30, ok(5, 2));
        b.at(1, deposit(5), 40, 50, ok(10, seq_nr));
        assert_eq!(violation(&b.history).kind, ViolationKind::NotLinearizable);
    }
}

#[test]
fn a_view_is_checked_field_by_field() {
    for (owner, status) in [("bob", "open"), ("ann", "closed")] {
        let mut b = opened();
        b.at(2, view(), 20, 30, viewed(owner, 0, status));
        assert_eq!(violation(&b.history).kind, ViolationKind::NotLinearizable);
    }
    let mut b = Builder::new();
    b.at(2, view(), 0, 10, viewed_new());
    assert_linearizable(&b.history);
}

#[test]
fn malformed_operations_are_refused() {
    let mut b = opened();
    b.at(2, view(), 20, 30, ok(0, 1));
    assert_eq!(violation(&b.history).kind, ViolationKind::Malformed);
    let mut b = opened();
    b.at(2, deposit(1), 30, 20, ok(1, 2));
    assert_eq!(violation(&b.history).kind, ViolationKind::Malformed);
    let mut b = Builder::new();
    b.history.push(Operation {
        entity: EntityRef::new("counter", "c"),
        ..b.operation(1, open("ann"), 0, 10, ok(0, 1))
    });
    assert_eq!(violation(&b.history).kind, ViolationKind::Malformed);
}

#[test]
fn entities_are_checked_independently() {
    let mut b = opened();
    b.history.push(Operation {
        entity: EntityRef::account("b"),
        ..b.operation(2, deposit(5), 0, 100, ok(5, 2))
    });
    b.at(1, deposit(5), 20, 30, ok(5, 2));
    let v = violation(&b.history);
    assert_eq!(v.entity, EntityRef::account("b"));
    assert!(
        v.to_string().starts_with("account/b: not linearizable"),
        "{v}"
    );
}

#[test]
fn a_violation_names_the_operations_and_the_state() {
    let mut b = opened();
    b.at(1, deposit(5), 20, 30, ok(5, 2));
    b.at(2, withdraw(2), 40, 50, ok(2, 3));
    let text = violation(&b.history).to_string();
    assert!(text.contains("#0 client 1 open(\"ann\")"), "{text}");
    assert!(text.contains("#2 client 2 withdraw(2)"), "{text}");
    assert!(
        text.contains("open, owner \"ann\", balance 5, seq-nr 2"),
        "{text}"
    );
    assert!(text.contains("balance 3 seq-nr 3"), "{text}");
}

#[test]
fn a_search_over_its_budget_is_inconclusive_not_a_pass() {
    let mut b = opened();
    for i in 0..20 {
        b.at(i, deposit(i + 1), 20, 1000, unknown());
    }
    // No subset of the deposits sums to this: only a full search could tell.
    b.at(30, view(), 2000, 2010, viewed("ann", 211, "open"));
    let options = CheckOptions {
        max_states_per_entity: 50,
    };
    let report = check_linearizable_with(&b.history, &options).expect("no violation found");
    assert!(!report.is_conclusive());
    assert_eq!(
        report.inconclusive().collect::<Vec<_>>(),
        vec![&EntityRef::account("a")]
    );
}

#[test]
fn two_hundred_operations_from_eight_clients_check_quickly() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..20 {
        let plan = concurrent_plan(200..=200, 1, 8)
            .new_tree(&mut runner)
            .expect("a plan")
            .current();
        let (history, _) = plan.run();
        let report = assert_linearizable(&history);
        // Answers pin each effect's place: the search stays near one
        // node per operation (about 200 here).
        assert!(report.states_explored() < 2_000, "{report:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sequential_histories_of_the_model_are_linearizable(plan in sequential_plan(1..=60, 3)) {
        let (history, _) = plan.run();
        let report = check_linearizable(&history);
        prop_assert!(report.as_ref().is_ok_and(|r| r.is_conclusive()), "{report:?}");
    }

    #[test]
    fn widened_windows_keep_a_model_history_linearizable(plan in concurrent_plan(1..=60, 2, 8)) {
        let (history, _) = plan.run();
        let report = check_linearizable(&history);
        prop_assert!(report.as_ref().is_ok_and(|r| r.is_conclusive()), "{:?}", report.err().map(|v| v.to_string()));
    }

    #[test]
    fn a_changed_balance_in_a_sequential_history_is_caught(
        plan in sequential_plan(1..=60, 3),
        which in any::<prop::sample::Index>(),
        delta in 1..1000u64,
    ) {
        let (mut history, _) = plan.run();
        let oks: Vec<usize> = (0..history.operations.len())
            .filter(|&i| matches!(history.operations[i].outcome, Outcome::Ok { .. }))
            .collect();
        prop_assume!(!oks.is_empty());
        let i = oks[which.index(oks.len())];
        if let Outcome::Ok { balance, .. } = &mut history.operations[i].outcome {
            *balance = balance.wrapping_add(delta);
        }
        let v = check_linearizable(&history);
        prop_assert!(v.is_err(), "mutated #{} passed", i);
    }
}
