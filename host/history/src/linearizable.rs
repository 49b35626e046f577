//! The linearizability checker: per entity, a search for a total order of
//! its operations that respects real time and that the sequential account
//! model explains (Wing & Gong's search with Lowe's memoisation, as in the
//! `porcupine` and Knossos checkers).
//!
//! How a history becomes the search's *calls*:
//! - an `Ok` command is a required effect whose reply (balance, seq-nr)
//!   must be the model's; a `Rejected` one is a no-op read whose reason must
//!   fit the state; a `Viewed` view must equal the model's view;
//! - an `Unknown` command is an optional effect with no deadline: it may be
//!   placed anywhere after its invocation, or nowhere; an `Unknown` view and
//!   every `Failed` operation are dropped;
//! - the `Ok`/`Unknown` operations sharing a command id are *one* call, since
//!   the host applies an id at most once: it is required if any was
//!   answered, its window runs from the applying operation's invocation
//!   (the non-duplicate `Ok`, else the earliest of them) to the earliest
//!   answer, and all answers must agree. The host also remembers a refusal
//!   under an id, so `Rejected` operations sharing an id with others are
//!   one refusal, placed from the earliest invocation to the earliest
//!   answer, their reasons all the same; an id both refused and applied is a
//!   violation. Failed operations are independent: they persisted nothing.
//!
//! Invariants of the search:
//! - The model state counts applied events (`seq_nr`), so an `Ok` seq-nr is
//!   checked, and state-changing operations linearize in seq-nr order.
//! - A memo entry (linearized set, state) means that node was fully explored
//!   without success; entries are 128-bit fingerprints (a Zobrist hash of
//!   the set xor a hash of the state), so a false "seen" needs a 2^-128
//!   collision.
//! - A read that fits the current state is linearized at once without
//!   branching: placing a no-op earlier never invalidates an order.
//! - An unknown effect never takes a seq-nr an answered effect was told
//!   (that answer could then never be placed), so unknown effects are only
//!   tried in the gaps between answers: without this, every pending unknown
//!   is tried everywhere and the search grows exponentially in them.
//! - At most `max_states_per_entity` nodes are explored; past that the
//!   entity is *inconclusive*, reported as such, never passed or failed.
//!
//! tidy: long file: the search, its memo and the explanation of a violation are one algorithm over one state representation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};

use crate::history::{EntityRef, History, Op, Outcome};
use crate::model::{ACCOUNT_TYPE, Cmd, Rejection, Status, consistent, decide, possible};
use crate::{Violation, ViolationKind, describe};

/// Default most search nodes explored per entity before giving up on it
/// as inconclusive. A linearizable entity of 200 operations eight-way
/// concurrent takes about one node per operation; disproving one of 1,000
/// took up to ~500,000 nodes (0.2 s). The cap bounds a pathological entity
/// to a few seconds and ~150 MB of memo (16-byte entries).
pub const DEFAULT_MAX_STATES_PER_ENTITY: u64 = 5_000_000;

/// Bounds of a linearizability check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Most search nodes explored per entity; default
    /// [`DEFAULT_MAX_STATES_PER_ENTITY`].
    pub max_states_per_entity: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_states_per_entity: DEFAULT_MAX_STATES_PER_ENTITY,
        }
    }
}

/// What a successful check covered, per entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearizabilityReport {
    /// In entity order.
    pub entities: Vec<EntityReport>,
}

impl LinearizabilityReport {
    /// Entities whose search ran out of budget: neither passed nor failed.
    pub fn inconclusive(&self) -> impl Iterator<Item = &EntityRef> + '_ {
        self.entities
            .iter()
            .filter(|e| e.inconclusive)
            .map(|e| &e.entity)
    }

    /// Whether every entity was proved linearizable.
    pub fn is_conclusive(&self) -> bool {
        self.entities.iter().all(|e| !e.inconclusive)
    }

    /// Search nodes explored over all entities.
    pub fn states_explored(&self) -> u64 {
        self.entities.iter().map(|e| e.states_explored).sum()
    }
}

/// One entity's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityReport {
    pub entity: EntityRef,
    /// Its operations in the history, failed and unknown ones included.
    pub operations: usize,
    /// Search nodes (distinct linearized set and state) explored.
    pub states_explored: u64,
    /// The search hit its budget before an answer.
    pub inconclusive: bool,
}

/// [`check_linearizable_with`] the default options.
pub fn check_linearizable(history: &History) -> Result<LinearizabilityReport, Violation> {
    check_linearizable_with(history, &CheckOptions::default())
}

/// Checks each entity's operations are linearizable with respect to the
/// account model; the first violation (in entity order) is returned.
pub fn check_linearizable_with(
    history: &History,
    options: &CheckOptions,
) -> Result<LinearizabilityReport, Violation> {
    let mut entities = Vec::new();
    for (entity, indexes) in history.by_entity() {
        entities.push(check_entity(history, entity, &indexes, options)?);
    }
    Ok(LinearizabilityReport { entities })
}

fn check_entity(
    history: &History,
    entity: &EntityRef,
    indexes: &[usize],
    options: &CheckOptions,
) -> Result<EntityReport, Violation> {
    let mut owners = Owners::default();
    let calls = calls_of(history, entity, indexes, &mut owners)?;
    let searched = search(&calls, options.max_states_per_entity);
    let report = EntityReport {
        entity: entity.clone(),
        operations: indexes.len(),
        states_explored: searched.explored,
        inconclusive: false,
    };
    match searched.verdict {
        Verdict::Linearizable => Ok(report),
        Verdict::Inconclusive => Ok(EntityReport {
            inconclusive: true,
            ..report
        }),
        Verdict::NotLinearizable(deepest) => {
            Err(not_linearizable(history, entity, &calls, &owners, &deepest))
        }
    }
}

/// Owner names interned per entity, so the search state is `Copy`.
#[derive(Default)]
struct Owners {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Owners {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// `"ann"`, or `none` before an owner is set.
    fn name(&self, id: Option<u32>) -> String {
        match id.and_then(|id| self.names.get(id as usize)) {
            Some(name) => format!("{name:?}"),
            None => "none".to_owned(),
        }
    }
}

/// The model's state, plus the number of events applied (the seq-nr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    status: Status,
    owner: Option<u32>,
    balance: u64,
    seq_nr: u64,
}

impl State {
    const INITIAL: State = State {
        status: Status::New,
        owner: None,
        balance: 0,
        seq_nr: 0,
    };

    fn describe(&self, owners: &Owners) -> String {
        format!(
            "{}, owner {}, balance {}, seq-nr {}",
            self.status,
            owners.name(self.owner),
            self.balance,
            self.seq_nr
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    balance: u64,
    seq_nr: u64,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A command that takes effect; `reply` is what it was answered, if it was.
    Effect {
        cmd: Cmd,
        owner: Option<u32>,
        reply: Option<Reply>,
    },
    /// A refused command: a no-op whose reason must fit.
    Refusal { cmd: Cmd, rejection: Rejection },
    /// A view.
    Read {
        owner: Option<u32>,
        balance: u64,
        status: Status,
    },
}

impl Kind {
    fn is_read(&self) -> bool {
        !matches!(self, Kind::Effect { .. })
    }
}

/// One thing the search orders: an operation, or the operations of one
/// command id.
#[derive(Debug)]
struct Call {
    invoke: u64,
    /// `u64::MAX` when it was never answered.
    ret: u64,
    /// Must be linearized; an unanswered effect may never happen.
    required: bool,
    kind: Kind,
    /// The history operations it stands for.
    sources: Vec<usize>,
}

/// The state after `kind`, or `None` if it cannot happen in `state`. An
/// optional effect the model refuses is `None` too: refused, it is the same
/// as never happening.
fn step(state: State, kind: &Kind) -> Option<State> {
    match *kind {
        Kind::Effect { cmd, owner, reply } => {
            let (status, balance) = decide(state.status, state.balance, cmd).ok()?;
            let next = State {
                status,
                owner: if matches!(cmd, Cmd::Open { .. }) {
                    owner
                } else {
                    state.owner
                },
                balance,
                seq_nr: state.seq_nr + 1,
            };
            match reply {
                Some(r) if r.balance != next.balance || r.seq_nr != next.seq_nr => None,
                _ => Some(next),
            }
        }
        Kind::Refusal { cmd, rejection } => {
            consistent(state.status, state.balance, cmd, rejection).then_some(state)
        }
        Kind::Read {
            owner,
            balance,
            status,
        } => (state.owner == owner && state.balance == balance && state.status == status)
            .then_some(state),
    }
}

/// Why `kind` cannot come next in `state`, for a human.
fn explain(state: State, kind: &Kind, owners: &Owners) -> String {
    if step(state, kind).is_some() {
        return "fits here, but no order of the operations left does".to_owned();
    }
    match *kind {
        Kind::Effect { cmd, reply, .. } => match decide(state.status, state.balance, cmd) {
            Err(rejection) => format!("the account refuses it here ({rejection})"),
            Ok((_, balance)) => match reply {
                Some(r) => format!(
                    "the account answers balance {balance} seq-nr {}, not balance {} seq-nr {}",
                    state.seq_nr + 1,
                    r.balance,
                    r.seq_nr
                ),
                None => "cannot happen here".to_owned(),
            },
        },
        Kind::Refusal { cmd, .. } => match decide(state.status, state.balance, cmd) {
            Ok(_) => "the account accepts it here".to_owned(),
            Err(rejection) => {
                format!("the account refuses it here for another reason ({rejection})")
            }
        },
        Kind::Read { .. } => format!(
            "the view here is {}, owner {}, balance {}",
            state.status,
            owners.name(state.owner),
            state.balance
        ),
    }
}

/// What the search orders.
struct Calls {
    /// `list[..required]` are required, the rest optional; each part is
    /// sorted by invocation.
    list: Vec<Call>,
    required: usize,
    /// The seq-nrs answered effects were told. An answered effect runs only
    /// right after the seq-nr before its own, and seq-nrs only grow: an
    /// optional effect taking one of these would strand its owner. This
    /// confines unknown effects to the gaps between answers.
    claimed: HashSet<u64>,
}

/// The search's calls; or why the entity's operations cannot be judged.
fn calls_of(
    history: &History,
    entity: &EntityRef,
    indexes: &[usize],
    owners: &mut Owners,
) -> Result<Calls, Violation> {
    let malformed = |i: usize, why: &str| {
        Violation::new(
            entity,
            ViolationKind::Malformed,
            vec![i],
            format!("{}: {why}", describe(history, i)),
        )
    };
    let mut calls = Vec::new();
    // Ordered so the first violation found is the same on every run.
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in indexes {
        let operation = &history.operations[i];
        if operation.entity.entity_type != ACCOUNT_TYPE {
            return Err(malformed(i, "the checkers model only `account` entities"));
        }
        if operation
            .completed_at
            .is_some_and(|at| at < operation.invoked_at)
        {
            return Err(malformed(i, "completed before it was invoked"));
        }
        let answered = || {
            operation
                .completed_at
                .ok_or_else(|| malformed(i, "a definitive outcome needs a completion time"))
        };
        let cmd = Cmd::of(&operation.op);
        match (&operation.outcome, cmd) {
            (Outcome::Failed { .. }, _) | (Outcome::Unknown { .. }, None) => {}
            (
                Outcome::Viewed {
                    owner,
                    balance,
                    status,
                },
                None,
            ) => {
                let status = Status::parse(status)
                    .ok_or_else(|| malformed(i, "a view's status is new, open or closed"))?;
                calls.push(Call {
                    invoke: operation.invoked_at,
                    ret: answered()?,
                    required: true,
                    kind: Kind::Read {
                        owner: owner.as_deref().map(|name| owners.id(name)),
                        balance: *balance,
                        status,
                    },
                    sources: vec![i],
                });
            }
            (_, None) => {
                return Err(malformed(
                    i,
                    "a view is answered with a view, failed or unknown",
                ));
            }
            (Outcome::Viewed { .. }, Some(_)) => {
                return Err(malformed(i, "a command is not answered with a view"));
            }
            (Outcome::Rejected { reason }, Some(cmd)) => {
                let rejection = Rejection::classify(reason)
                    .ok_or_else(|| malformed(i, "the reason names no account rejection"))?;
                if !possible(cmd, rejection) {
                    return Err(Violation::new(
                        entity,
                        ViolationKind::NotLinearizable,
                        vec![i],
                        format!(
                            "{}: no state of an account refuses {} for that reason",
                            describe(history, i),
                            operation.op
                        ),
                    ));
                }
                let ret = answered()?;
                match &operation.command_id {
                    Some(id) => groups.entry(id).or_default().push(i),
                    None => calls.push(Call {
                        invoke: operation.invoked_at,
                        ret,
                        required: true,
                        kind: Kind::Refusal { cmd, rejection },
                        sources: vec![i],
                    }),
                }
            }
            (Outcome::Ok { .. } | Outcome::Unknown { .. }, Some(_)) => {
                if matches!(operation.outcome, Outcome::Ok { .. }) {
                    answered()?;
                }
                let duplicate = matches!(
                    operation.outcome,
                    Outcome::Ok {
                        duplicate: true,
                        ..
                    }
                );
                match &operation.command_id {
                    Some(id) => groups.entry(id).or_default().push(i),
                    None if duplicate => {
                        return Err(malformed(i, "a duplicate answer needs a command id"));
                    }
                    None => calls.push(effect(history, &[i], owners)?),
                }
            }
        }
    }
    for (id, members) in groups {
        calls.push(command_id_call(history, entity, id, &members, owners)?);
    }
    // Required calls first: the search scans them from the first pending
    // one, and optional ones (which may stay pending forever) apart.
    calls.sort_by_key(|c| (!c.required, c.invoke, c.ret, c.sources.first().copied()));
    let required = calls.iter().filter(|c| c.required).count();
    let claimed = calls[..required]
        .iter()
        .filter_map(|c| match c.kind {
            Kind::Effect { reply: Some(r), .. } => Some(r.seq_nr),
            _ => None,
        })
        .collect();
    Ok(Calls {
        list: calls,
        required,
        claimed,
    })
}

/// The one effect of `members`, the `Ok`/`Unknown` operations of one
/// command id (a lone operation without one is a group of one).
fn effect(history: &History, members: &[usize], owners: &mut Owners) -> Result<Call, Violation> {
    let ops = &history.operations;
    let first = &ops[members[0]];
    let answers: Vec<(usize, Reply, u64)> = members
        .iter()
        .filter_map(|&j| match (&ops[j].outcome, ops[j].completed_at) {
            (
                Outcome::Ok {
                    balance, seq_nr, ..
                },
                Some(at),
            ) => Some((
                j,
                Reply {
                    balance: *balance,
                    seq_nr: *seq_nr,
                },
                at,
            )),
            _ => None,
        })
        .collect();
    let applier = members.iter().copied().find(|&j| {
        matches!(
            ops[j].outcome,
            Outcome::Ok {
                duplicate: false,
                ..
            }
        )
    });
    let invoke = match applier {
        Some(j) => ops[j].invoked_at,
        None => members
            .iter()
            .map(|&j| ops[j].invoked_at)
            .min()
            .unwrap_or(first.invoked_at),
    };
    let ret = answers.iter().map(|a| a.2).min();
    let cmd = Cmd::of(&first.op).ok_or_else(|| {
        Violation::new(
            &first.entity,
            ViolationKind::Malformed,
            vec![members[0]],
            format!("{}: a view has no effect", describe(history, members[0])),
        )
    })?;
    let owner = match &first.op {
        Op::Open { owner } => Some(owners.id(owner)),
        _ => None,
    };
    Ok(Call {
        invoke,
        ret: ret.unwrap_or(u64::MAX),
        required: ret.is_some(),
        kind: Kind::Effect {
            cmd,
            owner,
            reply: answers.first().map(|a| a.1),
        },
        sources: members.to_vec(),
    })
}

/// The call of one command id's operations, once they are checked to be
/// one command applied at most once with agreeing answers.
fn command_id_call(
    history: &History,
    entity: &EntityRef,
    id: &str,
    members: &[usize],
    owners: &mut Owners,
) -> Result<Call, Violation> {
    let ops = &history.operations;
    let listed = |which: &[usize]| {
        which
            .iter()
            .map(|&j| format!("\n  {}", describe(history, j)))
            .collect::<String>()
    };
    let first = members[0];
    if let Some(&other) = members.iter().find(|&&j| ops[j].op != ops[first].op) {
        return Err(Violation::new(
            entity,
            ViolationKind::Malformed,
            vec![first, other],
            format!(
                "command id {id:?} carries two different commands:{}",
                listed(&[first, other])
            ),
        ));
    }
    let refused: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&j| matches!(ops[j].outcome, Outcome::Rejected { .. }))
        .collect();
    if let Some(&r) = refused.first() {
        return refusal_call(history, entity, id, members, r, &listed);
    }
    let appliers: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&j| {
            matches!(
                ops[j].outcome,
                Outcome::Ok {
                    duplicate: false,
                    ..
                }
            )
        })
        .collect();
    if appliers.len() > 1 {
        return Err(Violation::new(
            entity,
            ViolationKind::AppliedTwice,
            appliers.clone(),
            format!(
                "command id {id:?} was applied by each of these (none answered as a duplicate):{}",
                listed(&appliers)
            ),
        ));
    }
    let call = effect(history, members, owners)?;
    let answered: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&j| matches!(ops[j].outcome, Outcome::Ok { .. }))
        .collect();
    let reply_of = |j: usize| match ops[j].outcome {
        Outcome::Ok {
            balance, seq_nr, ..
        } => Some((balance, seq_nr)),
        _ => None,
    };
    if let Some(&a) = answered.first()
        && let Some(&b) = answered.iter().find(|&&b| reply_of(b) != reply_of(a))
    {
        return Err(Violation::new(
            entity,
            ViolationKind::DuplicateMismatch,
            vec![a, b],
            format!(
                "command id {id:?} is applied once, but its answers differ:{}",
                listed(&[a, b])
            ),
        ));
    }
    if call.required && call.ret < call.invoke {
        // The earliest answer came before the applying operation was sent.
        let early = answered
            .iter()
            .copied()
            .find(|&j| ops[j].completed_at == Some(call.ret))
            .unwrap_or(first);
        let mut involved = vec![early];
        involved.extend(appliers.iter().copied().filter(|&j| j != early));
        return Err(Violation::new(
            entity,
            ViolationKind::DuplicateMismatch,
            involved.clone(),
            format!(
                "command id {id:?} was answered as a duplicate at {} before the operation that applied it was sent at {}:{}",
                call.ret,
                call.invoke,
                listed(&involved)
            ),
        ));
    }
    Ok(call)
}

/// The call of a command id the entity refused (`r` one of its refusals):
/// every answer is that refusal, placed once between the earliest
/// invocation and the earliest answer.
fn refusal_call(
    history: &History,
    entity: &EntityRef,
    id: &str,
    members: &[usize],
    r: usize,
    listed: &dyn Fn(&[usize]) -> String,
) -> Result<Call, Violation> {
    let ops = &history.operations;
    let Outcome::Rejected { reason } = &ops[r].outcome else {
        return Err(Violation::new(
            entity,
            ViolationKind::Malformed,
            vec![r],
            "a refusal without its reason",
        ));
    };
    let disagrees = members.iter().copied().find(|&j| match &ops[j].outcome {
        Outcome::Rejected { reason: other } => other != reason,
        Outcome::Ok { .. } => true,
        _ => false,
    });
    if let Some(other) = disagrees {
        return Err(Violation::new(
            entity,
            ViolationKind::DuplicateMismatch,
            vec![r, other],
            format!(
                "command id {id:?} was refused, and answered otherwise on another try:{}",
                listed(&[r, other])
            ),
        ));
    }
    let malformed = |what: &str| {
        Violation::new(
            entity,
            ViolationKind::Malformed,
            vec![r],
            format!("{}: {what}", describe(history, r)),
        )
    };
    let cmd = Cmd::of(&ops[r].op).ok_or_else(|| malformed("a view is not refused"))?;
    let rejection =
        Rejection::classify(reason).ok_or_else(|| malformed("the reason names no rejection"))?;
    let invoke = members.iter().map(|&j| ops[j].invoked_at).min();
    let ret = members
        .iter()
        .filter(|&&j| matches!(ops[j].outcome, Outcome::Rejected { .. }))
        .filter_map(|&j| ops[j].completed_at)
        .min();
    Ok(Call {
        invoke: invoke.unwrap_or(ops[r].invoked_at),
        ret: ret.ok_or_else(|| malformed("a refusal without its answer"))?,
        required: true,
        kind: Kind::Refusal { cmd, rejection },
        sources: members.to_vec(),
    })
}

// ---- the search ----

enum Verdict {
    Linearizable,
    Inconclusive,
    NotLinearizable(Deepest),
}

struct Searched {
    verdict: Verdict,
    explored: u64,
}

/// The node that linearized the most required calls: where to point a
/// human when no order exists.
struct Deepest {
    order: Vec<u32>,
    state: State,
    done: usize,
}

struct Frame {
    /// The state at this node, before its choice.
    state: State,
    /// This node's candidates are `arena[start..end]`, tried from `next`.
    start: usize,
    end: usize,
    next: usize,
    /// The candidate being explored below this node.
    chosen: u32,
}

fn search(plan: &Calls, max_states: u64) -> Searched {
    let calls = &plan.list;
    let required = plan.required;
    let mut state = State::INITIAL;
    let mut deepest = Deepest {
        order: Vec::new(),
        state,
        done: 0,
    };
    if required == 0 {
        return Searched {
            verdict: Verdict::Linearizable,
            explored: 1,
        };
    }
    let keys = zobrist_keys(calls.len());
    let mut linearized = Bitset::new(calls.len());
    let mut set_key: u128 = 0;
    let mut done = 0usize;
    let mut seen: HashSet<u128, BuildHasherDefault<Prehashed>> = HashSet::default();
    seen.insert(set_key ^ state_key(state));
    let mut explored: u64 = 1;
    let mut arena: Vec<u32> = Vec::new();
    candidates(plan, &linearized, state, true, &mut arena);
    let mut frames = vec![Frame {
        state,
        start: 0,
        end: arena.len(),
        next: 0,
        chosen: u32::MAX,
    }];
    let verdict = loop {
        let Some(frame) = frames.last_mut() else {
            break Verdict::NotLinearizable(deepest);
        };
        if frame.next == frame.end {
            // Every candidate failed: undo the parent's choice.
            arena.truncate(frame.start);
            frames.pop();
            let Some(parent) = frames.last() else {
                break Verdict::NotLinearizable(deepest);
            };
            let c = parent.chosen as usize;
            linearized.clear(c);
            set_key ^= keys[c];
            state = parent.state;
            if calls[c].required {
                done -= 1;
            }
            continue;
        }
        let c = arena[frame.next] as usize;
        frame.next += 1;
        let Some(next) = step(state, &calls[c].kind) else {
            continue;
        };
        let key = set_key ^ keys[c];
        if !seen.insert(key ^ state_key(next)) {
            continue;
        }
        explored += 1;
        if explored > max_states {
            break Verdict::Inconclusive;
        }
        frame.chosen = c as u32;
        linearized.set(c);
        set_key = key;
        state = next;
        if calls[c].required {
            done += 1;
            if done == required {
                break Verdict::Linearizable;
            }
            if done > deepest.done {
                deepest = Deepest {
                    order: frames.iter().map(|f| f.chosen).collect(),
                    state,
                    done,
                };
            }
        }
        let start = arena.len();
        candidates(plan, &linearized, state, true, &mut arena);
        frames.push(Frame {
            state,
            start,
            end: arena.len(),
            next: start,
            chosen: u32::MAX,
        });
    };
    Searched { verdict, explored }
}

/// Appends the calls that may be linearized next: pending ones invoked no
/// later than the earliest answer among pending ones. Required first (the
/// likelier path), then optional ones, which only fit where the next
/// seq-nr is not claimed. With `greedy`, a read that fits `state` is the
/// only candidate.
fn candidates(plan: &Calls, linearized: &Bitset, state: State, greedy: bool, arena: &mut Vec<u32>) {
    let calls = &plan.list;
    let lo = linearized.first_clear().min(plan.required);
    // Sorted by invocation, and each answered after it is invoked: the scan
    // can stop at the first invocation past the running minimum.
    let mut deadline = u64::MAX;
    let mut end = lo;
    for (i, call) in calls[..plan.required].iter().enumerate().skip(lo) {
        if call.invoke > deadline {
            break;
        }
        end = i + 1;
        if !linearized.get(i) {
            deadline = deadline.min(call.ret);
        }
    }
    let start = arena.len();
    for (i, call) in calls.iter().enumerate().take(end).skip(lo) {
        if linearized.get(i) || call.invoke > deadline {
            continue;
        }
        if greedy && call.kind.is_read() && step(state, &call.kind).is_some() {
            arena.truncate(start);
            arena.push(i as u32);
            return;
        }
        arena.push(i as u32);
    }
    if plan.claimed.contains(&(state.seq_nr + 1)) {
        return;
    }
    for (i, call) in calls.iter().enumerate().skip(plan.required) {
        if call.invoke > deadline {
            break;
        }
        if !linearized.get(i) {
            arena.push(i as u32);
        }
    }
}

fn not_linearizable(
    history: &History,
    entity: &EntityRef,
    plan: &Calls,
    owners: &Owners,
    deepest: &Deepest,
) -> Violation {
    let calls = &plan.list;
    let name = |call: &Call| {
        let mut text = describe(history, call.sources[0]);
        if call.sources.len() > 1 {
            let others: Vec<String> = call.sources[1..].iter().map(|j| format!("#{j}")).collect();
            let _ = write!(text, " (with {} under the same id)", others.join(", "));
        }
        text
    };
    let required = plan.required;
    let mut text = format!(
        "no order of its operations fits the account model; the longest that does orders {} of the {} answered ones",
        deepest.done, required
    );
    const SHOWN: usize = 12;
    if deepest.order.is_empty() {
        text.push_str(", so it fails from the start");
    } else {
        text.push(':');
        if deepest.order.len() > SHOWN {
            let _ = write!(text, "\n  ... {} earlier", deepest.order.len() - SHOWN);
        }
        for &c in deepest
            .order
            .iter()
            .skip(deepest.order.len().saturating_sub(SHOWN))
        {
            let call = &calls[c as usize];
            let note = if call.required {
                ""
            } else {
                " (takes effect here)"
            };
            let _ = write!(text, "\n  {}{note}", name(call));
        }
    }
    let _ = write!(
        text,
        "\nthen the account is {}, and none of the operations that may come next fits:",
        deepest.state.describe(owners)
    );
    let mut linearized = Bitset::new(calls.len());
    for &c in &deepest.order {
        linearized.set(c as usize);
    }
    let mut next = Vec::new();
    candidates(plan, &linearized, deepest.state, false, &mut next);
    let mut operations = Vec::new();
    for &c in &next {
        let call = &calls[c as usize];
        if !call.required {
            continue;
        }
        operations.extend(call.sources.iter().copied());
        let _ = write!(
            text,
            "\n  {}: {}",
            name(call),
            explain(deepest.state, &call.kind, owners)
        );
    }
    Violation::new(entity, ViolationKind::NotLinearizable, operations, text)
}

/// A fixed-size set of call indexes.
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: usize) -> Self {
        Bitset(vec![0; n.div_ceil(64)])
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    /// The lowest index not in the set (possibly past the end).
    fn first_clear(&self) -> usize {
        self.0
            .iter()
            .position(|&w| w != u64::MAX)
            .map_or(self.0.len() * 64, |w| {
                w * 64 + self.0[w].trailing_ones() as usize
            })
    }
}

/// SplitMix64's finaliser: a bijection that scatters nearby inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random 128-bit key per call (fixed seed: checks are reproducible);
/// a set's key is the xor of its members'.
fn zobrist_keys(n: usize) -> Vec<u128> {
    let mut seed: u64 = 0x5eed_f00d_5eed_f00d;
    let mut next = || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(seed)
    };
    (0..n)
        .map(|_| (u128::from(next()) << 64) | u128::from(next()))
        .collect()
}

fn state_key(state: State) -> u128 {
    let tag = state.status as u64 | (state.owner.map_or(0, |o| u64::from(o) + 1) << 2);
    let lo = mix(mix(mix(tag ^ 0x243f_6a88_85a3_08d3) ^ state.balance) ^ state.seq_nr);
    let hi = mix(mix(mix(tag ^ 0x1319_8a2e_0370_7344) ^ state.seq_nr) ^ state.balance);
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The memo's keys are already uniform: hash them by folding.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = (key as u64) ^ ((key >> 64) as u64);
    }
}

#[cfg(test)]
mod tests;
