//! The command path gives the same answers whether an entity runs as a wasm
//! component or natively.
//!
//! Two nodes: one with the built `account.wasm` deployed, one with the same
//! `account` source compiled into the test and deployed as a `NativeEntity`
//! (as `host/cli/benches/engine.rs` does). Random sequences of commands — valid
//! ones, ones the account must reject (overdrafts, deposits before open,
//! anything after close, closing a non-empty account, overflowing deposits),
//! malformed ones, retries of earlier command ids (deduplication) — run
//! through both, with random "passivate all" steps in between (the next
//! command recovers its entity by replay). Every command's outcome must be
//! identical on both nodes and as a tiny reference model of an account
//! predicts; at the end each entity's view, events and state bytes must be
//! identical on both nodes, and the view and events as the model says.
//!
//! The two nodes are shared by every case (opening them and compiling the
//! component once); each case uses entity ids of its own, so cases stay
//! independent, and both clocks are fixed so events are byte-identical.

/// The `account` guest's logic, the very file its component is built from,
/// compiled natively (depending on the guest crate would share its
/// hash-less cdylib output file with the guests workspace).
#[path = "../../guests/account/src/entity.rs"]
#[allow(dead_code, unreachable_pub)]
mod account;
#[path = "../../host/cli/benches/support/native.rs"]
mod native;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use account::AccountError;
use native::Native;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use stead_node::{CommandReply, Node, NodeError, SettableClock};
use stead_tests::{guest, json, test_config};

const CLOCK_MS: u64 = 1_700_000_000_000;
/// Entities per case.
const ENTITIES: usize = 3;

/// The wasm node and the native node, shared by every case.
struct Nodes {
    wasm: Node,
    native: Node,
    _dirs: [tempfile::TempDir; 2],
}

fn nodes() -> &'static Nodes {
    static NODES: OnceLock<Nodes> = OnceLock::new();
    NODES.get_or_init(|| {
        // Both nodes' commands see the same fixed `now-ms`.
        let clock = Arc::new(SettableClock::new());
        clock.set_wall_ms(Some(CLOCK_MS));
        let open = |dir: &tempfile::TempDir| {
            Node::builder(test_config(dir.path()))
                .clock(clock.clone())
                .open()
                .expect("node opens")
        };
        let wasm_dir = tempfile::tempdir().expect("tempdir");
        let wasm = open(&wasm_dir);
        let info = wasm.deploy(&guest("account")).expect("deploy account.wasm");
        let native_dir = tempfile::tempdir().expect("tempdir");
        let native = open(&native_dir);
        let native_info = native
            .deploy_native(Arc::new(Native::<account::Account>::new()))
            .expect("deploy the native account");
        assert_eq!(
            (&info.name, &info.version, info.snapshot_every),
            (
                &native_info.name,
                &native_info.version,
                native_info.snapshot_every
            )
        );
        Nodes {
            wasm,
            native,
            _dirs: [wasm_dir, native_dir],
        }
    })
}

#[derive(Debug, Clone)]
enum Command {
    Open(&'static str),
    Deposit(u64),
    Withdraw(u64),
    Close,
    /// Bytes that are not an account command.
    Malformed(&'static [u8]),
}

impl Command {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Command::Open(owner) => json!({"open": {"owner": owner}}).to_string().into_bytes(),
            Command::Deposit(amount) => json!({"deposit": {"amount": amount}})
                .to_string()
                .into_bytes(),
            Command::Withdraw(amount) => json!({"withdraw": {"amount": amount}})
                .to_string()
                .into_bytes(),
            Command::Close => br#"{"close":{}}"#.to_vec(),
            Command::Malformed(bytes) => bytes.to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Send {
        entity: usize,
        command: Command,
    },
    /// Sends an earlier command again with its command id (`n` picks which).
    Retry(usize),
    PassivateAll,
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 1u64..100,
        1 => Just(0u64),
        1 => (u64::MAX - 3)..=u64::MAX,
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        7 => prop::sample::select(vec!["ada", "bob", "zoë"]).prop_map(Command::Open),
        1 => prop::sample::select(vec!["", "  "]).prop_map(Command::Open),
        8 => amount().prop_map(Command::Deposit),
        6 => amount().prop_map(Command::Withdraw),
        2 => Just(Command::Close),
        2 => prop::sample::select(vec![
            &b""[..],
            b"not json",
            b"{}",
            b"[1,2]",
            b"{\"deposit\":{}}",
            b"{\"deposit\":{\"amount\":-5}}",
            b"{\"deposit\":{\"amount\":1.5}}",
            b"{\"deposit\":{\"amount\":18446744073709551616}}",
            b"{\"withdraw\":{\"amount\":\"7\"}}",
            b"{\"transfer\":{\"amount\":1}}",
            b"{\"open\":{\"owner\":\"ada\",\"extra\":true}}",
            b"{\"close\":{}} trailing",
            b"\xff\xfe",
        ])
        .prop_map(Command::Malformed),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        20 => (0..ENTITIES, command()).prop_map(|(entity, command)| Step::Send { entity, command }),
        3 => any::<usize>().prop_map(Step::Retry),
        2 => Just(Step::PassivateAll),
    ]
}

/// The reference model of one account.
#[derive(Debug, Clone, Default)]
struct Account {
    owner: Option<String>,
    balance: u64,
    status: &'static str,
    /// The events it should have, as JSON.
    events: Vec<Value>,
    /// Command ids that persisted events: their reply's balance and the
    /// seq-nr of their last event.
    done: Vec<(String, u64, u64)>,
    /// Command ids the entity refused: a retry gets the same refusal.
    refused: Vec<(String, Expected)>,
}

/// What the model expects of one command.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Reply {
        balance: u64,
        seq_nr: u64,
        duplicate: bool,
    },
    Rejected(AccountError),
    InvalidCommand,
}

impl Account {
    fn new() -> Self {
        Self {
            status: "new",
            ..Self::default()
        }
    }

    fn ensure_open(&self) -> Result<(), AccountError> {
        match self.status {
            "new" => Err(AccountError::NotOpen),
            "closed" => Err(AccountError::Closed),
            _ => Ok(()),
        }
    }

    fn decide(&self, command: &Command) -> Result<Value, Option<AccountError>> {
        let event = match command {
            Command::Malformed(_) => return Err(None),
            Command::Open(owner) => {
                match self.status {
                    "open" => return Err(Some(AccountError::AlreadyOpen)),
                    "closed" => return Err(Some(AccountError::Closed)),
                    _ => {}
                }
                if owner.trim().is_empty() {
                    return Err(Some(AccountError::EmptyOwner));
                }
                json!({"opened": {"owner": owner}})
            }
            Command::Deposit(amount) => {
                self.ensure_open()?;
                if *amount == 0 {
                    return Err(Some(AccountError::ZeroAmount));
                }
                if self.balance.checked_add(*amount).is_none() {
                    return Err(Some(AccountError::BalanceOverflow));
                }
                json!({"deposited": {"amount": amount}})
            }
            Command::Withdraw(amount) => {
                self.ensure_open()?;
                if *amount == 0 {
                    return Err(Some(AccountError::ZeroAmount));
                }
                if *amount > self.balance {
                    return Err(Some(AccountError::InsufficientFunds {
                        balance: self.balance,
                        requested: *amount,
                    }));
                }
                json!({"withdrawn": {"amount": amount}})
            }
            Command::Close => {
                self.ensure_open()?;
                if self.balance != 0 {
                    return Err(Some(AccountError::BalanceNotZero {
                        balance: self.balance,
                    }));
                }
                json!({"closed": {}})
            }
        };
        Ok(event)
    }

    fn handle(&mut self, command_id: &str, command: &Command) -> Expected {
        if let Some((_, balance, seq_nr)) = self.done.iter().find(|(id, ..)| id == command_id) {
            return Expected::Reply {
                balance: *balance,
                seq_nr: *seq_nr,
                duplicate: true,
            };
        }
        if let Some((_, refusal)) = self.refused.iter().find(|(id, _)| id == command_id) {
            return refusal.clone();
        }
        let event = match self.decide(command) {
            Ok(event) => event,
            Err(refusal) => {
                let refusal = match refusal {
                    Some(error) => Expected::Rejected(error),
                    None => Expected::InvalidCommand,
                };
                self.refused.push((command_id.to_owned(), refusal.clone()));
                return refusal;
            }
        };
        match command {
            Command::Open(owner) => {
                self.owner = Some((*owner).to_owned());
                self.status = "open";
            }
            Command::Deposit(amount) => self.balance += amount,
            Command::Withdraw(amount) => self.balance -= amount,
            Command::Close => self.status = "closed",
            Command::Malformed(_) => unreachable!("refused above"),
        }
        self.events.push(event);
        let seq_nr = self.events.len() as u64;
        self.done
            .push((command_id.to_owned(), self.balance, seq_nr));
        Expected::Reply {
            balance: self.balance,
            seq_nr,
            duplicate: false,
        }
    }

    fn view(&self) -> Value {
        json!({"owner": self.owner, "balance": self.balance, "status": self.status})
    }
}

fn matches_model(outcome: &Result<CommandReply, NodeError>, expected: &Expected) -> bool {
    match (outcome, expected) {
        (
            Ok(reply),
            Expected::Reply {
                balance,
                seq_nr,
                duplicate,
            },
        ) => {
            serde_json::from_slice::<Value>(&reply.reply).ok() == Some(json!({"balance": balance}))
                && reply.seq_nr == *seq_nr
                && reply.duplicate == *duplicate
        }
        (Err(NodeError::Rejected(message)), Expected::Rejected(error)) => {
            *message == error.to_string()
        }
        (Err(NodeError::InvalidCommand(_)), Expected::InvalidCommand) => true,
        _ => false,
    }
}

fn run(case: u64, steps: &[Step]) -> Result<(), TestCaseError> {
    let nodes = nodes();
    let ids: Vec<String> = (0..ENTITIES).map(|i| format!("case{case}-e{i}")).collect();
    let mut model: Vec<Account> = (0..ENTITIES).map(|_| Account::new()).collect();
    // Every command sent: (entity, command id, command).
    let mut sent: Vec<(usize, String, Command)> = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let (entity, command_id, command) = match step {
            Step::PassivateAll => {
                nodes.wasm.passivate_all_blocking().expect("passivate wasm");
                nodes
                    .native
                    .passivate_all_blocking()
                    .expect("passivate native");
                continue;
            }
            Step::Send { entity, command } => (*entity, format!("cmd-{n}"), command.clone()),
            Step::Retry(pick) => {
                if sent.is_empty() {
                    continue;
                }
                sent[pick % sent.len()].clone()
            }
        };
        let id = &ids[entity];
        let send = |node: &Node| {
            node.send_blocking("account", id, command.bytes(), Some(command_id.clone()))
        };
        let wasm = send(&nodes.wasm);
        let native = send(&nodes.native);
        prop_assert_eq!(
            &wasm,
            &native,
            "step {}: {:?} as {} to {}",
            n,
            command,
            command_id,
            id
        );
        let expected = model[entity].handle(&command_id, &command);
        prop_assert!(
            matches_model(&wasm, &expected),
            "step {}: {:?} as {} to {}: the node answered {:?}, the model expects {:?}",
            n,
            command,
            command_id,
            id,
            wasm,
            expected
        );
        sent.push((entity, command_id, command));
    }
    for (id, account) in ids.iter().zip(&model) {
        let view = |node: &Node| json(&node.view_blocking("account", id).expect("view"));
        let wasm_view = view(&nodes.wasm);
        prop_assert_eq!(&wasm_view, &view(&nodes.native), "view of {}", id);
        prop_assert_eq!(&wasm_view, &account.view(), "view of {}", id);

        let events = |node: &Node| node.events("account", id, 0, usize::MAX).expect("events");
        let wasm_events = events(&nodes.wasm);
        prop_assert_eq!(&wasm_events, &events(&nodes.native), "events of {}", id);
        let payloads: Vec<Value> = wasm_events
            .iter()
            .map(|e| json(&e.record.payload))
            .collect();
        prop_assert_eq!(&payloads, &account.events, "events of {}", id);

        let state = |node: &Node| {
            node.entity_state_blocking("account", id)
                .expect("state bytes")
        };
        prop_assert_eq!(state(&nodes.wasm), state(&nodes.native), "state of {}", id);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        // A failure is reported with its shrunk case; no regression files
        // are written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn account_commands_give_identical_outcomes_in_wasm_and_natively(
        steps in prop::collection::vec(step(), 1..30)
    ) {
        static CASE: AtomicU64 = AtomicU64::new(0);
        run(CASE.fetch_add(1, Ordering::Relaxed), &steps)?;
    }
}
