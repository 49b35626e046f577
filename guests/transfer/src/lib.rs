//! `transfer`: a money transfer between two `account` entities, as a saga.
//!
//! `start` debits the source account (`withdraw`), and on its answer the
//! host delivers `debited` or `debit_refused` back here; `debited` credits
//! the target (`deposit`), answered by `credited` or `credit_refused`; a
//! refused credit refunds the source (`deposit` back), answered by
//! `refunded`. `schedule` does the same later: it sets a durable timer
//! whose command, `begin`, starts the debit at that time; `cancel` stops a
//! scheduled transfer before it begins.
//!
//! Each step is an event, and each message is sent with the event that
//! decides it, so the saga resumes wherever a crash stopped it. The host
//! delivers every message at least once under an id of its own, and the
//! accounts' deduplication makes each take effect once: money is never
//! created or lost, and a transfer ends `completed`, `refunded` or
//! `failed` (nothing moved).

use core::fmt;

use serde::{Deserialize, Serialize};
use stead_sdk::{Context, Effect, EventSourced};

/// The entity type of the accounts a transfer moves money between.
pub const ACCOUNT: &str = "account";
/// The timer that starts a scheduled transfer.
pub const START_TIMER: &str = "start";

/// Where a transfer is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not started.
    #[default]
    New,
    /// Waiting for its start timer.
    Scheduled,
    /// Asked the source for the money.
    Debiting,
    /// Has the money; asked the target to take it.
    Crediting,
    /// The target refused it; giving it back to the source.
    Refunding,
    /// Final: the target has the money.
    Completed,
    /// Final: the source has its money back.
    Refunded,
    /// Final: the source refused the debit; nothing moved.
    Failed,
    /// Final: cancelled before it began; nothing moved.
    Cancelled,
    /// The source refused the refund (it was closed meanwhile, which needs
    /// a zero balance): the money waits for an operator.
    RefundFailed,
}

impl Status {
    /// Whether the transfer is over (nothing more happens to it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed
                | Status::Refunded
                | Status::Failed
                | Status::Cancelled
                | Status::RefundFailed
        )
    }
}

/// The transfer's state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub status: Status,
    pub from: String,
    pub to: String,
    pub amount: u64,
    /// When a scheduled transfer was due (ms since the Unix epoch).
    pub scheduled_for_ms: Option<u64>,
    /// When the debit was asked for (the host's clock at that command).
    pub began_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransferCommand {
    /// Moves `amount` from account `from` to account `to` now.
    Start {
        from: String,
        to: String,
        amount: u64,
    },
    /// The same, at `at_ms` (ms since the Unix epoch).
    Schedule {
        from: String,
        to: String,
        amount: u64,
        at_ms: u64,
    },
    /// Cancels a scheduled transfer that has not begun.
    Cancel {},
    /// The start timer's command.
    Begin {},
    /// The source accepted the withdrawal (from the host).
    Debited {},
    /// The source refused it (from the host).
    DebitRefused {},
    /// The target accepted the deposit (from the host).
    Credited {},
    /// The target refused it (from the host).
    CreditRefused {},
    /// The source took the refund back (from the host).
    Refunded {},
    /// The source refused the refund (from the host).
    RefundRefused {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferEvent {
    Scheduled {
        from: String,
        to: String,
        amount: u64,
        at_ms: u64,
    },
    Started {
        from: String,
        to: String,
        amount: u64,
        at_ms: u64,
    },
    Debited {},
    DebitRefused {},
    Credited {},
    CreditRefused {},
    Refunded {},
    RefundRefused {},
    Cancelled {},
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    AlreadyStarted,
    SameAccount,
    EmptyAccount,
    ZeroAmount,
    /// A step that does not follow from where the transfer is.
    Unexpected {
        command: &'static str,
        status: Status,
    },
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::AlreadyStarted => f.write_str("the transfer has already started"),
            TransferError::SameAccount => f.write_str("from and to must be different accounts"),
            TransferError::EmptyAccount => f.write_str("from and to must not be empty"),
            TransferError::ZeroAmount => f.write_str("amount must be greater than zero"),
            TransferError::Unexpected { command, status } => {
                write!(
                    f,
                    "`{command}` does not apply to a transfer that is {status:?}"
                )
            }
        }
    }
}

/// Account commands (the `account` entity's JSON).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum AccountCommand {
    Withdraw { amount: u64 },
    Deposit { amount: u64 },
}

impl Transfer {
    fn check(from: &str, to: &str, amount: u64) -> Result<(), TransferError> {
        if from.is_empty() || to.is_empty() {
            return Err(TransferError::EmptyAccount);
        }
        if from == to {
            return Err(TransferError::SameAccount);
        }
        if amount == 0 {
            return Err(TransferError::ZeroAmount);
        }
        Ok(())
    }

    fn expect(&self, command: &'static str, status: Status) -> Result<(), TransferError> {
        if self.status == status {
            Ok(())
        } else {
            Err(TransferError::Unexpected {
                command,
                status: self.status,
            })
        }
    }

    /// The debit: asks the source for the money.
    fn debit(&self, ctx: &Context) -> Effect<TransferEvent, Transfer> {
        let started = TransferEvent::Started {
            from: self.from.clone(),
            to: self.to.clone(),
            amount: self.amount,
            at_ms: ctx.now_ms(),
        };
        self.persist(started, |p, t| {
            p.ask_to(
                ACCOUNT,
                t.from.clone(),
                &AccountCommand::Withdraw { amount: t.amount },
                &TransferCommand::Debited {},
                &TransferCommand::DebitRefused {},
            )
        })
    }

    /// Persists `event` with the sends `then` adds; replies the new state.
    fn persist(
        &self,
        event: TransferEvent,
        then: impl FnOnce(
            stead_sdk::Persist<TransferEvent>,
            &Transfer,
        ) -> stead_sdk::Persist<TransferEvent>,
    ) -> Effect<TransferEvent, Transfer> {
        let mut next = self.clone();
        next.apply(&event);
        then(Effect::persist(event), &next).then_reply(next)
    }
}

impl EventSourced for Transfer {
    const TYPE_NAME: &'static str = "transfer";
    const VERSION: &'static str = "0.1.0";
    const SNAPSHOT_EVERY: u32 = 0;

    type Command = TransferCommand;
    type Event = TransferEvent;
    type Reply = Transfer;
    type Error = TransferError;
    type View = Transfer;

    fn initial(_id: &str) -> Self {
        Transfer::default()
    }

    fn handle(
        &self,
        ctx: &Context,
        cmd: TransferCommand,
    ) -> Result<Effect<TransferEvent, Transfer>, TransferError> {
        match cmd {
            TransferCommand::Start { from, to, amount } => {
                if self.status != Status::New {
                    return Err(TransferError::AlreadyStarted);
                }
                Self::check(&from, &to, amount)?;
                let next = Transfer {
                    from,
                    to,
                    amount,
                    ..Transfer::default()
                };
                Ok(next.debit(ctx))
            }
            TransferCommand::Schedule {
                from,
                to,
                amount,
                at_ms,
            } => {
                if self.status != Status::New {
                    return Err(TransferError::AlreadyStarted);
                }
                Self::check(&from, &to, amount)?;
                let event = TransferEvent::Scheduled {
                    from,
                    to,
                    amount,
                    at_ms,
                };
                Ok(self.persist(event, |p, _| {
                    p.set_timer(START_TIMER, at_ms, &TransferCommand::Begin {})
                }))
            }
            TransferCommand::Cancel {} => {
                self.expect("cancel", Status::Scheduled)?;
                Ok(self.persist(TransferEvent::Cancelled {}, |p, _| {
                    p.cancel_timer(START_TIMER)
                }))
            }
            TransferCommand::Begin {} => {
                self.expect("begin", Status::Scheduled)?;
                Ok(self.debit(ctx))
            }
            TransferCommand::Debited {} => {
                self.expect("debited", Status::Debiting)?;
                Ok(self.persist(TransferEvent::Debited {}, |p, t| {
                    p.ask_to(
                        ACCOUNT,
                        t.to.clone(),
                        &AccountCommand::Deposit { amount: t.amount },
                        &TransferCommand::Credited {},
                        &TransferCommand::CreditRefused {},
                    )
                }))
            }
            TransferCommand::DebitRefused {} => {
                self.expect("debit_refused", Status::Debiting)?;
                Ok(self.persist(TransferEvent::DebitRefused {}, |p, _| p))
            }
            TransferCommand::Credited {} => {
                self.expect("credited", Status::Crediting)?;
                Ok(self.persist(TransferEvent::Credited {}, |p, _| p))
            }
            TransferCommand::CreditRefused {} => {
                self.expect("credit_refused", Status::Crediting)?;
                Ok(self.persist(TransferEvent::CreditRefused {}, |p, t| {
                    // The source had the money a moment ago: a deposit back
                    // is refused only if it was closed since, which needs a
                    // zero balance; the refund then waits for an operator.
                    p.ask_to(
                        ACCOUNT,
                        t.from.clone(),
                        &AccountCommand::Deposit { amount: t.amount },
                        &TransferCommand::Refunded {},
                        &TransferCommand::RefundRefused {},
                    )
                }))
            }
            TransferCommand::Refunded {} => {
                self.expect("refunded", Status::Refunding)?;
                Ok(self.persist(TransferEvent::Refunded {}, |p, _| p))
            }
            TransferCommand::RefundRefused {} => {
                self.expect("refund_refused", Status::Refunding)?;
                Ok(self.persist(TransferEvent::RefundRefused {}, |p, _| p))
            }
        }
    }

    fn apply(&mut self, event: &TransferEvent) {
        match event {
            TransferEvent::Scheduled {
                from,
                to,
                amount,
                at_ms,
            } => {
                self.from.clone_from(from);
                self.to.clone_from(to);
                self.amount = *amount;
                self.scheduled_for_ms = Some(*at_ms);
                self.status = Status::Scheduled;
            }
            TransferEvent::Started {
                from,
                to,
                amount,
                at_ms,
            } => {
                self.from.clone_from(from);
                self.to.clone_from(to);
                self.amount = *amount;
                self.began_at_ms = Some(*at_ms);
                self.status = Status::Debiting;
            }
            TransferEvent::Debited {} => self.status = Status::Crediting,
            TransferEvent::DebitRefused {} => self.status = Status::Failed,
            TransferEvent::Credited {} => self.status = Status::Completed,
            TransferEvent::CreditRefused {} => self.status = Status::Refunding,
            TransferEvent::Refunded {} => self.status = Status::Refunded,
            TransferEvent::RefundRefused {} => self.status = Status::RefundFailed,
            TransferEvent::Cancelled {} => self.status = Status::Cancelled,
        }
    }

    fn view(&self) -> Transfer {
        self.clone()
    }
}

stead_sdk::export_entity!(Transfer);

#[cfg(test)]
mod tests;
