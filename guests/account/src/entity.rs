//! The account's state, commands, events and logic: plain Rust with no
//! wasm glue, so the host's benchmarks and tests compile this same file
//! natively (`#[path]`) as the yardstick of the built component.

use core::fmt;

use serde::{Deserialize, Serialize};
use stead_sdk::{Context, Effect, EventSourced};

/// The account's state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub owner: Option<String>,
    pub balance: u64,
    pub status: Status,
}

/// Lifecycle of an account.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not opened yet: only `open` is accepted.
    #[default]
    New,
    Open,
    /// Final: every command is rejected.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AccountCommand {
    Open { owner: String },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
    Close {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
    Closed {},
}

/// The reply to every accepted command: the balance after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub balance: u64,
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountError {
    NotOpen,
    AlreadyOpen,
    Closed,
    EmptyOwner,
    ZeroAmount,
    InsufficientFunds { balance: u64, requested: u64 },
    BalanceOverflow,
    BalanceNotZero { balance: u64 },
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountError::NotOpen => f.write_str("account is not open"),
            AccountError::AlreadyOpen => f.write_str("account is already open"),
            AccountError::Closed => f.write_str("account is closed"),
            AccountError::EmptyOwner => f.write_str("owner must not be empty"),
            AccountError::ZeroAmount => f.write_str("amount must be greater than zero"),
            AccountError::InsufficientFunds { balance, requested } => write!(
                f,
                "insufficient funds: balance is {balance}, withdrawal is {requested}"
            ),
            AccountError::BalanceOverflow => f.write_str("deposit would overflow the balance"),
            AccountError::BalanceNotZero { balance } => {
                write!(f, "cannot close: balance is {balance}, not zero")
            }
        }
    }
}

/// What `get` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub owner: Option<String>,
    pub balance: u64,
    pub status: Status,
}

impl Account {
    fn ensure_open(&self) -> Result<(), AccountError> {
        match self.status {
            Status::New => Err(AccountError::NotOpen),
            Status::Open => Ok(()),
            Status::Closed => Err(AccountError::Closed),
        }
    }

    fn balance_after(&self, event: &AccountEvent) -> Balance {
        let mut next = self.clone();
        next.apply(event);
        Balance {
            balance: next.balance,
        }
    }
}

impl EventSourced for Account {
    const TYPE_NAME: &'static str = "account";
    const VERSION: &'static str = "0.1.0";
    const SNAPSHOT_EVERY: u32 = 100;

    type Command = AccountCommand;
    type Event = AccountEvent;
    type Reply = Balance;
    type Error = AccountError;
    type View = AccountView;

    fn initial(_id: &str) -> Self {
        Account::default()
    }

    fn handle(
        &self,
        _ctx: &Context,
        cmd: AccountCommand,
    ) -> Result<Effect<AccountEvent, Balance>, AccountError> {
        let event = match cmd {
            AccountCommand::Open { owner } => {
                match self.status {
                    Status::New => {}
                    Status::Open => return Err(AccountError::AlreadyOpen),
                    Status::Closed => return Err(AccountError::Closed),
                }
                if owner.trim().is_empty() {
                    return Err(AccountError::EmptyOwner);
                }
                AccountEvent::Opened { owner }
            }
            AccountCommand::Deposit { amount } => {
                self.ensure_open()?;
                if amount == 0 {
                    return Err(AccountError::ZeroAmount);
                }
                if self.balance.checked_add(amount).is_none() {
                    return Err(AccountError::BalanceOverflow);
                }
                AccountEvent::Deposited { amount }
            }
            AccountCommand::Withdraw { amount } => {
                self.ensure_open()?;
                if amount == 0 {
                    return Err(AccountError::ZeroAmount);
                }
                if amount > self.balance {
                    return Err(AccountError::InsufficientFunds {
                        balance: self.balance,
                        requested: amount,
                    });
                }
                AccountEvent::Withdrawn { amount }
            }
            AccountCommand::Close {} => {
                self.ensure_open()?;
                if self.balance != 0 {
                    return Err(AccountError::BalanceNotZero {
                        balance: self.balance,
                    });
                }
                AccountEvent::Closed {}
            }
        };
        let reply = self.balance_after(&event);
        Ok(Effect::persist(event).then_reply(reply))
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => {
                self.owner = Some(owner.clone());
                self.status = Status::Open;
            }
            // Saturating: `handle` never emits an overflowing event, and
            // `apply` must stay total for any event in the journal.
            AccountEvent::Deposited { amount } => {
                self.balance = self.balance.saturating_add(*amount)
            }
            AccountEvent::Withdrawn { amount } => {
                self.balance = self.balance.saturating_sub(*amount)
            }
            AccountEvent::Closed {} => self.status = Status::Closed,
        }
    }

    fn view(&self) -> AccountView {
        AccountView {
            owner: self.owner.clone(),
            balance: self.balance,
            status: self.status,
        }
    }
}
