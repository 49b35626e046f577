//! The saga's steps in the test kit: what each command persists and sends,
//! and how the answers it hears back move it on. Natively, and through the
//! built component with the `harness` feature.

use serde_json::json;
use stead_sdk::testkit::TestKit;

use super::*;

fn start(kit: &mut TestKit<Transfer>, amount: u64) -> stead_sdk::Send {
    let outcome = kit.when(TransferCommand::Start {
        from: "alice".into(),
        to: "bob".into(),
        amount,
    });
    outcome.expect_sends(&[stead_sdk::Send {
        entity_type: ACCOUNT.into(),
        entity_id: "alice".into(),
        command: json!({"withdraw": {"amount": amount}}),
        on_accepted: Some(json!({"debited": {}})),
        on_refused: Some(json!({"debit_refused": {}})),
    }]);
    outcome.sends()[0].clone()
}

#[test]
fn a_transfer_debits_the_source_then_credits_the_target() {
    let mut kit = TestKit::<Transfer>::new("t-1");
    let debit = start(&mut kit, 30);
    assert_eq!(kit.state().status, Status::Debiting);
    let debited = kit.deliver_acceptance(&debit);
    debited.expect_sends(&[stead_sdk::Send {
        entity_type: ACCOUNT.into(),
        entity_id: "bob".into(),
        command: json!({"deposit": {"amount": 30}}),
        on_accepted: Some(json!({"credited": {}})),
        on_refused: Some(json!({"credit_refused": {}})),
    }]);
    let credit = debited.sends()[0].clone();
    kit.deliver_acceptance(&credit)
        .expect_events(&[TransferEvent::Credited {}])
        .expect_sends(&[]);
    assert_eq!(kit.state().status, Status::Completed);
    assert_eq!(kit.view()["status"], "completed");
}

#[test]
fn a_refused_debit_fails_the_transfer_and_moves_nothing() {
    let mut kit = TestKit::<Transfer>::new("t-2");
    let debit = start(&mut kit, 500);
    kit.deliver_refusal(&debit)
        .expect_events(&[TransferEvent::DebitRefused {}])
        .expect_sends(&[]);
    assert_eq!(kit.state().status, Status::Failed);
}

#[test]
fn a_refused_credit_refunds_the_source() {
    let mut kit = TestKit::<Transfer>::new("t-3");
    let debit = start(&mut kit, 10);
    let credit = kit.deliver_acceptance(&debit).sends()[0].clone();
    let refusal = kit.deliver_refusal(&credit);
    refusal.expect_sends(&[stead_sdk::Send {
        entity_type: ACCOUNT.into(),
        entity_id: "alice".into(),
        command: json!({"deposit": {"amount": 10}}),
        on_accepted: Some(json!({"refunded": {}})),
        on_refused: Some(json!({"refund_refused": {}})),
    }]);
    assert_eq!(kit.state().status, Status::Refunding);
    let refund = refusal.sends()[0].clone();
    kit.deliver_acceptance(&refund)
        .expect_events(&[TransferEvent::Refunded {}]);
    assert_eq!(kit.state().status, Status::Refunded);
}

#[test]
fn a_refused_refund_is_not_taken_for_a_refund() {
    let mut kit = TestKit::<Transfer>::new("t-7");
    let debit = start(&mut kit, 10);
    let credit = kit.deliver_acceptance(&debit).sends()[0].clone();
    let refund = kit.deliver_refusal(&credit).sends()[0].clone();
    kit.deliver_refusal(&refund)
        .expect_events(&[TransferEvent::RefundRefused {}]);
    assert_eq!(kit.state().status, Status::RefundFailed);
    assert!(kit.state().status.is_final());
}

#[test]
fn a_scheduled_transfer_begins_when_its_timer_fires_and_not_before() {
    let mut kit = TestKit::<Transfer>::new("t-4").at_time(1_000);
    kit.when(TransferCommand::Schedule {
        from: "alice".into(),
        to: "bob".into(),
        amount: 5,
        at_ms: 60_000,
    })
    .expect_timer(START_TIMER, 60_000, &json!({"begin": {}}))
    .expect_sends(&[]);
    assert_eq!(kit.state().status, Status::Scheduled);
    let began = kit.fire_timer(START_TIMER);
    assert_eq!(began.sends().len(), 1, "the debit is asked for");
    let state = kit.state();
    assert_eq!(state.status, Status::Debiting);
    assert_eq!(state.scheduled_for_ms, Some(60_000));
    assert!(state.began_at_ms >= Some(60_000), "{state:?}");
}

#[test]
fn cancelling_a_scheduled_transfer_cancels_its_timer() {
    let mut kit = TestKit::<Transfer>::new("t-5");
    kit.when(TransferCommand::Schedule {
        from: "alice".into(),
        to: "bob".into(),
        amount: 5,
        at_ms: 60_000,
    });
    kit.when(TransferCommand::Cancel {})
        .expect_timers(&[stead_sdk::TimerChange::Cancel {
            name: START_TIMER.into(),
        }]);
    assert!(kit.pending_timers().is_empty());
    assert_eq!(kit.state().status, Status::Cancelled);
    kit.when(TransferCommand::Begin {})
        .expect_rejected("`begin` does not apply to a transfer that is Cancelled");
}

#[test]
fn steps_out_of_order_and_bad_requests_are_refused() {
    let mut kit = TestKit::<Transfer>::new("t-6");
    kit.when(TransferCommand::Debited {})
        .expect_rejected("`debited` does not apply to a transfer that is New");
    kit.when(TransferCommand::Start {
        from: "a".into(),
        to: "a".into(),
        amount: 1,
    })
    .expect_rejected("from and to must be different accounts");
    kit.when(TransferCommand::Start {
        from: "a".into(),
        to: "b".into(),
        amount: 0,
    })
    .expect_rejected("amount must be greater than zero");
    start(&mut kit, 1);
    kit.when(TransferCommand::Start {
        from: "a".into(),
        to: "b".into(),
        amount: 1,
    })
    .expect_rejected("the transfer has already started");
}
