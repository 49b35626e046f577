//! The sequential model of the `account` entity: the yardstick both checkers
//! hold a history and a journal against.
//!
//! It restates the rules of `guests/account/src/entity.rs` without the SDK:
//! this crate must not depend on a guest, and a checker that shared the
//! guest's code would share its bugs. The rules live once, in `decide`,
//! on the owner-free part of the state, so the linearizability search can
//! run them on a compact `Copy` state and [`Account`] on the real one.
//!
//! Invariants:
//! - [`Account::handle`] accepts exactly what the guest accepts and replies
//!   with the balance after the event; an accepted command persists exactly
//!   one event, so an entity's seq-nr is the number of commands it accepted.
//! - A rejection is *consistent* with a state when its condition holds there
//!   ([`Account::refuses`]). When several hold (a zero deposit to a closed
//!   account), any of them is accepted: the checkers judge what the account
//!   did, not which check the guest ran first.
//! - [`Rejection::classify`] maps the guest's `Display` texts (and short
//!   forms such as "not open", "balance not zero") to a [`Rejection`]; a
//!   balance or amount named in the text must match the state too.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{Op, Outcome};

pub use crate::history::ACCOUNT_TYPE;

/// Lifecycle of an account, as its view spells it.
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not opened yet: only `open` is accepted.
    #[default]
    New,
    Open,
    /// Final: every command is refused.
    Closed,
}

impl Status {
    /// The view's spelling: `new`, `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Closed => "closed",
        }
    }

    /// The inverse of [`Status::as_str`].
    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "new" => Some(Status::New),
            "open" => Some(Status::Open),
            "closed" => Some(Status::Closed),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account event, in the guest's JSON encoding (`{"deposited":{"amount":5}}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
    Closed {},
}

impl Event {
    /// Decodes an event as the journal stores it.
    pub fn from_json(json: &str) -> Result<Event, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The guest's JSON encoding of this event.
    pub fn to_json(&self) -> String {
        match self {
            Event::Opened { owner } => serde_json::json!({ "opened": { "owner": owner } }),
            Event::Deposited { amount } => serde_json::json!({ "deposited": { "amount": amount } }),
            Event::Withdrawn { amount } => serde_json::json!({ "withdrawn": { "amount": amount } }),
            Event::Closed {} => serde_json::json!({ "closed": {} }),
        }
        .to_string()
    }

    /// The one command that produces this event.
    pub fn command(&self) -> Op {
        match self {
            Event::Opened { owner } => Op::Open {
                owner: owner.clone(),
            },
            Event::Deposited { amount } => Op::Deposit { amount: *amount },
            Event::Withdrawn { amount } => Op::Withdraw { amount: *amount },
            Event::Closed {} => Op::Close,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Opened { owner } => write!(f, "opened({owner:?})"),
            Event::Deposited { amount } => write!(f, "deposited({amount})"),
            Event::Withdrawn { amount } => write!(f, "withdrawn({amount})"),
            Event::Closed {} => f.write_str("closed"),
        }
    }
}

/// Why the account refuses a command: the guest's `AccountError`, with the
/// numbers its text carries when they are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    NotOpen,
    AlreadyOpen,
    Closed,
    EmptyOwner,
    ZeroAmount,
    InsufficientFunds {
        balance: Option<u64>,
        requested: Option<u64>,
    },
    BalanceOverflow,
    BalanceNotZero {
        balance: Option<u64>,
    },
}

impl Rejection {
    /// The rejection a reason text names, or `None` for a text that names
    /// none. Matching is by fragment, so a host's prefix ("rejected: ...")
    /// does not matter.
    pub fn classify(reason: &str) -> Option<Rejection> {
        let text = reason.to_ascii_lowercase();
        // Most specific first: "cannot close: ... not zero" also holds "close".
        let rejection = if text.contains("insufficient") {
            Rejection::InsufficientFunds {
                balance: number_after(&text, "balance is "),
                requested: number_after(&text, "withdrawal is "),
            }
        } else if text.contains("overflow") {
            Rejection::BalanceOverflow
        } else if text.contains("not zero") || text.contains("cannot close") {
            Rejection::BalanceNotZero {
                balance: number_after(&text, "balance is "),
            }
        } else if text.contains("already open") {
            Rejection::AlreadyOpen
        } else if text.contains("not open") {
            Rejection::NotOpen
        } else if text.contains("empty") {
            Rejection::EmptyOwner
        } else if text.contains("zero") {
            Rejection::ZeroAmount
        } else if text.contains("closed") {
            Rejection::Closed
        } else {
            return None;
        };
        Some(rejection)
    }
}

/// The guest's `Display` text (without numbers it does not know).
impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotOpen => f.write_str("account is not open"),
            Rejection::AlreadyOpen => f.write_str("account is already open"),
            Rejection::Closed => f.write_str("account is closed"),
            Rejection::EmptyOwner => f.write_str("owner must not be empty"),
            Rejection::ZeroAmount => f.write_str("amount must be greater than zero"),
            Rejection::InsufficientFunds {
                balance: Some(balance),
                requested: Some(requested),
            } => write!(
                f,
                "insufficient funds: balance is {balance}, withdrawal is {requested}"
            ),
            Rejection::InsufficientFunds { .. } => f.write_str("insufficient funds"),
            Rejection::BalanceOverflow => f.write_str("deposit would overflow the balance"),
            Rejection::BalanceNotZero {
                balance: Some(balance),
            } => write!(f, "cannot close: balance is {balance}, not zero"),
            Rejection::BalanceNotZero { balance: None } => f.write_str("balance not zero"),
        }
    }
}

fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let start = text.find(prefix)? + prefix.len();
    let digits: &str = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// A command reduced to what the rules read: the owner's name only matters
/// for whether it is blank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Cmd {
    Open { blank_owner: bool },
    Deposit(u64),
    Withdraw(u64),
    Close,
}

impl Cmd {
    /// `None` for a view, which is no command.
    pub(crate) fn of(op: &Op) -> Option<Cmd> {
        match op {
            Op::Open { owner } => Some(Cmd::Open {
                blank_owner: owner.trim().is_empty(),
            }),
            Op::Deposit { amount } => Some(Cmd::Deposit(*amount)),
            Op::Withdraw { amount } => Some(Cmd::Withdraw(*amount)),
            Op::Close => Some(Cmd::Close),
            Op::View => None,
        }
    }
}

fn ensure_open(status: Status) -> Result<(), Rejection> {
    match status {
        Status::New => Err(Rejection::NotOpen),
        Status::Open => Ok(()),
        Status::Closed => Err(Rejection::Closed),
    }
}

/// The account's rules: the status and balance after `cmd`, or the reason
/// the guest gives for refusing it (checked in the guest's order).
pub(crate) fn decide(status: Status, balance: u64, cmd: Cmd) -> Result<(Status, u64), Rejection> {
    match cmd {
        Cmd::Open { blank_owner } => match status {
            Status::New if blank_owner => Err(Rejection::EmptyOwner),
            Status::New => Ok((Status::Open, balance)),
            Status::Open => Err(Rejection::AlreadyOpen),
            Status::Closed => Err(Rejection::Closed),
        },
        Cmd::Deposit(amount) => {
            ensure_open(status)?;
            if amount == 0 {
                return Err(Rejection::ZeroAmount);
            }
            let after = balance
                .checked_add(amount)
                .ok_or(Rejection::BalanceOverflow)?;
            Ok((Status::Open, after))
        }
        Cmd::Withdraw(amount) => {
            ensure_open(status)?;
            if amount == 0 {
                return Err(Rejection::ZeroAmount);
            }
            if amount > balance {
                return Err(Rejection::InsufficientFunds {
                    balance: Some(balance),
                    requested: Some(amount),
                });
            }
            Ok((Status::Open, balance - amount))
        }
        Cmd::Close => {
            ensure_open(status)?;
            if balance != 0 {
                return Err(Rejection::BalanceNotZero {
                    balance: Some(balance),
                });
            }
            Ok((Status::Closed, balance))
        }
    }
}

/// Whether `rejection`'s condition holds for `cmd` in this state. Each
/// condition implies [`decide`] refuses `cmd` there.
pub(crate) fn consistent(status: Status, balance: u64, cmd: Cmd, rejection: Rejection) -> bool {
    let open = status == Status::Open;
    match rejection {
        Rejection::NotOpen => status == Status::New && !matches!(cmd, Cmd::Open { .. }),
        Rejection::AlreadyOpen => open && matches!(cmd, Cmd::Open { .. }),
        Rejection::Closed => status == Status::Closed,
        Rejection::EmptyOwner => cmd == Cmd::Open { blank_owner: true },
        Rejection::ZeroAmount => matches!(cmd, Cmd::Deposit(0) | Cmd::Withdraw(0)),
        Rejection::InsufficientFunds {
            balance: said,
            requested,
        } => {
            open && matches!(cmd, Cmd::Withdraw(amount)
                if amount > balance && requested.is_none_or(|r| r == amount))
                && said.is_none_or(|b| b == balance)
        }
        Rejection::BalanceOverflow => {
            open && matches!(cmd, Cmd::Deposit(amount) if balance.checked_add(amount).is_none())
        }
        Rejection::BalanceNotZero { balance: said } => {
            open && cmd == Cmd::Close && balance != 0 && said.is_none_or(|b| b == balance)
        }
    }
}

/// Whether `rejection` can be consistent for `cmd` in any state at all: a
/// reason that never fits its command is reported without a search.
pub(crate) fn possible(cmd: Cmd, rejection: Rejection) -> bool {
    match rejection {
        Rejection::NotOpen => !matches!(cmd, Cmd::Open { .. }),
        Rejection::AlreadyOpen => matches!(cmd, Cmd::Open { .. }),
        Rejection::Closed => true,
        Rejection::EmptyOwner => cmd == Cmd::Open { blank_owner: true },
        Rejection::ZeroAmount => matches!(cmd, Cmd::Deposit(0) | Cmd::Withdraw(0)),
        Rejection::InsufficientFunds { balance, requested } => match cmd {
            Cmd::Withdraw(amount) => {
                amount > balance.unwrap_or(0) && requested.is_none_or(|r| r == amount)
            }
            _ => false,
        },
        Rejection::BalanceOverflow => matches!(cmd, Cmd::Deposit(amount) if amount > 0),
        Rejection::BalanceNotZero { balance } => cmd == Cmd::Close && balance != Some(0),
    }
}

/// The account's state, as the guest holds it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    pub owner: Option<String>,
    pub balance: u64,
    pub status: Status,
}

impl Account {
    /// The event `op` persists, or why the account refuses it; `None` for a
    /// view, which decides nothing.
    pub fn handle(&self, op: &Op) -> Option<Result<Event, Rejection>> {
        let cmd = Cmd::of(op)?;
        Some(decide(self.status, self.balance, cmd).map(|_| match op {
            Op::Open { owner } => Event::Opened {
                owner: owner.clone(),
            },
            Op::Deposit { amount } => Event::Deposited { amount: *amount },
            Op::Withdraw { amount } => Event::Withdrawn { amount: *amount },
            Op::Close | Op::View => Event::Closed {},
        }))
    }

    /// Folds an event in; total, like the guest's `apply` (saturating), so
    /// any journal replays. Whether the event was valid is
    /// [`Account::handle`]'s question.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Opened { owner } => {
                self.owner = Some(owner.clone());
                self.status = Status::Open;
            }
            Event::Deposited { amount } => self.balance = self.balance.saturating_add(*amount),
            Event::Withdrawn { amount } => self.balance = self.balance.saturating_sub(*amount),
            Event::Closed {} => self.status = Status::Closed,
        }
    }

    /// Whether refusing `op` for `rejection` is consistent with this state
    /// (always false for a view).
    pub fn refuses(&self, op: &Op, rejection: Rejection) -> bool {
        Cmd::of(op).is_some_and(|cmd| consistent(self.status, self.balance, cmd, rejection))
    }

    /// What a view of this state shows.
    pub fn viewed(&self) -> Outcome {
        Outcome::Viewed {
            owner: self.owner.clone(),
            balance: self.balance,
            status: self.status.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_reason_is_classified() {
        // Verbatim from `AccountError`'s Display in guests/account/src/entity.rs.
        let cases = [
            ("account is not open", Rejection::NotOpen),
            ("account is already open", Rejection::AlreadyOpen),
            ("account is closed", Rejection::Closed),
            ("owner must not be empty", Rejection::EmptyOwner),
            ("amount must be greater than zero", Rejection::ZeroAmount),
            (
                "insufficient funds: balance is 3, withdrawal is 10",
                Rejection::InsufficientFunds {
                    balance: Some(3),
                    requested: Some(10),
                },
            ),
            (
                "deposit would overflow the balance",
                Rejection::BalanceOverflow,
            ),
            (
                "cannot close: balance is 7, not zero",
                Rejection::BalanceNotZero { balance: Some(7) },
            ),
        ];
        for (text, rejection) in cases {
            assert_eq!(Rejection::classify(text), Some(rejection), "{text}");
            assert_eq!(rejection.to_string(), text);
        }
    }

    #[test]
    fn short_and_prefixed_reasons_are_classified() {
        let cases = [
            ("not open", Rejection::NotOpen),
            ("rejected: account is closed", Rejection::Closed),
            (
                "balance not zero",
                Rejection::BalanceNotZero { balance: None },
            ),
            ("zero amount", Rejection::ZeroAmount),
            ("empty owner", Rejection::EmptyOwner),
            (
                "Insufficient funds",
                Rejection::InsufficientFunds {
                    balance: None,
                    requested: None,
                },
            ),
        ];
        for (text, rejection) in cases {
            assert_eq!(Rejection::classify(text), Some(rejection), "{text}");
        }
        assert_eq!(Rejection::classify("the network is down"), None);
    }

    #[test]
    fn the_model_follows_the_guest_rules() {
        let mut account = Account::default();
        let deposit = |amount| Op::Deposit { amount };
        assert_eq!(account.handle(&deposit(5)), Some(Err(Rejection::NotOpen)));
        assert_eq!(
            account.handle(&Op::Open { owner: " ".into() }),
            Some(Err(Rejection::EmptyOwner))
        );
        let opened = account
            .handle(&Op::Open {
                owner: "ann".into(),
            })
            .and_then(Result::ok)
            .expect("a new account opens");
        account.apply(&opened);
        assert_eq!(
            account.handle(&Op::Open {
                owner: "bob".into()
            }),
            Some(Err(Rejection::AlreadyOpen))
        );
        assert_eq!(
            account.handle(&deposit(0)),
            Some(Err(Rejection::ZeroAmount))
        );
        account.apply(&Event::Deposited { amount: u64::MAX });
        assert_eq!(
            account.handle(&deposit(1)),
            Some(Err(Rejection::BalanceOverflow))
        );
        assert_eq!(
            account.handle(&Op::Close),
            Some(Err(Rejection::BalanceNotZero {
                balance: Some(u64::MAX)
            }))
        );
        account.apply(&Event::Withdrawn { amount: u64::MAX });
        assert_eq!(account.handle(&Op::Close), Some(Ok(Event::Closed {})));
        assert_eq!(account.handle(&Op::View), None);
        account.apply(&Event::Closed {});
        assert_eq!(account.handle(&deposit(0)), Some(Err(Rejection::Closed)));
        // Two conditions hold: either reason is consistent.
        assert!(account.refuses(&deposit(0), Rejection::Closed));
        assert!(account.refuses(&deposit(0), Rejection::ZeroAmount));
        assert!(!account.refuses(&deposit(0), Rejection::NotOpen));
    }

    #[test]
    fn a_rejection_naming_another_balance_is_inconsistent() {
        let account = Account {
            owner: Some("ann".into()),
            balance: 3,
            status: Status::Open,
        };
        let withdraw = Op::Withdraw { amount: 10 };
        let said = |balance| Rejection::InsufficientFunds {
            balance: Some(balance),
            requested: Some(10),
        };
        assert!(account.refuses(&withdraw, said(3)));
        assert!(!account.refuses(&withdraw, said(4)));
    }

    #[test]
    fn events_use_the_guest_encoding() {
        let events = [
            (
                Event::Opened {
                    owner: "a\"n".into(),
                },
                r#"{"opened":{"owner":"a\"n"}}"#,
            ),
            (
                Event::Deposited { amount: 5 },
                r#"{"deposited":{"amount":5}}"#,
            ),
            (
                Event::Withdrawn { amount: 2 },
                r#"{"withdrawn":{"amount":2}}"#,
            ),
            (Event::Closed {}, r#"{"closed":{}}"#),
        ];
        for (event, json) in events {
            assert_eq!(event.to_json(), json);
            assert_eq!(Event::from_json(json).expect("decodes"), event);
        }
    }
}
