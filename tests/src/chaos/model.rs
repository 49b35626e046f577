//! What the chaos client knows about each entity, and the reference fold of
//! the example entities' events.
//!
//! A [`Ledger`] holds, for one entity, every command the node acknowledged
//! (in sequence order: the driver keeps at most one command of an entity in
//! flight) and at most one command whose outcome is unknown (sent, then the
//! node died or refused it as overloaded). [`Model`] is the state the
//! `account` and `cart` guests must reach from the same events, written
//! independently of their code, so a check compares the node with a second
//! implementation, not with itself.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The two entity types the chaos load drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Account,
    Cart,
}

impl Kind {
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Account => "account",
            Kind::Cart => "cart",
        }
    }
}

/// A command as the client sent it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub command_id: String,
    pub payload: Value,
    /// When it was first sent, in the run's history clock.
    pub invoked_at: u64,
}

/// A command the node acknowledged, with what it answered.
#[derive(Debug, Clone)]
pub struct Acked {
    pub command_id: String,
    pub payload: Value,
    pub reply: Value,
    pub seq_nr: u64,
}

/// The reference state of one entity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// account: opened for this owner.
    pub owner: Option<String>,
    pub balance: u64,
    /// cart: quantity by SKU.
    pub items: BTreeMap<String, u64>,
}

const SKUS: [&str; 6] = ["tea", "jam", "oat", "fig", "yam", "rye"];

impl Model {
    /// The next command a client would send, valid in this state.
    pub fn next_command(&self, kind: Kind, rng: &mut fastrand::Rng) -> Value {
        match kind {
            Kind::Account => match &self.owner {
                None => json!({"open": {"owner": format!("owner-{}", rng.u32(..1000))}}),
                Some(_) if self.balance > 0 && rng.u8(..10) < 3 => {
                    json!({"withdraw": {"amount": rng.u64(1..=self.balance)}})
                }
                Some(_) => json!({"deposit": {"amount": rng.u64(1..=500)}}),
            },
            Kind::Cart => {
                if !self.items.is_empty() && rng.u8(..10) < 3 {
                    let skus: Vec<&String> = self.items.keys().collect();
                    let sku = skus[rng.usize(..skus.len())];
                    json!({"remove_item": {"sku": sku}})
                } else {
                    let sku = SKUS[rng.usize(..SKUS.len())];
                    json!({"add_item": {"sku": sku, "quantity": rng.u64(1..=5)}})
                }
            }
        }
    }

    /// The event the entity must persist for `command` in this state.
    pub fn expected_event(&self, kind: Kind, command: &Value) -> Result<Value, String> {
        let (name, body) = single(command)?;
        Ok(match (kind, name) {
            (Kind::Account, "open") => json!({"opened": {"owner": body["owner"]}}),
            (Kind::Account, "deposit") => json!({"deposited": {"amount": body["amount"]}}),
            (Kind::Account, "withdraw") => json!({"withdrawn": {"amount": body["amount"]}}),
            (Kind::Cart, "add_item") => {
                json!({"item_added": {"sku": body["sku"], "quantity": body["quantity"]}})
            }
            (Kind::Cart, "remove_item") => json!({"item_removed": {"sku": body["sku"]}}),
            _ => return Err(format!("the chaos load never sends {command}")),
        })
    }

    /// Folds one event into the state; refuses events the entity could not
    /// have emitted in this state.
    pub fn apply(&mut self, kind: Kind, event: &Value) -> Result<(), String> {
        let (name, body) = single(event)?;
        let amount = |field: &str| {
            body[field]
                .as_u64()
                .ok_or_else(|| format!("{field} is not an integer in {event}"))
        };
        match (kind, name) {
            (Kind::Account, "opened") if self.owner.is_none() => {
                let owner = body["owner"].as_str().ok_or("owner is not a string")?;
                self.owner = Some(owner.to_owned());
            }
            (Kind::Account, "deposited") if self.owner.is_some() => {
                self.balance = self
                    .balance
                    .checked_add(amount("amount")?)
                    .ok_or("balance overflow")?;
            }
            (Kind::Account, "withdrawn") if self.owner.is_some() => {
                self.balance = self
                    .balance
                    .checked_sub(amount("amount")?)
                    .ok_or_else(|| format!("{event} overdraws a balance of {}", self.balance))?;
            }
            (Kind::Cart, "item_added") => {
                let sku = body["sku"].as_str().ok_or("sku is not a string")?;
                *self.items.entry(sku.to_owned()).or_default() += amount("quantity")?;
            }
            (Kind::Cart, "item_removed") => {
                let sku = body["sku"].as_str().ok_or("sku is not a string")?;
                self.items
                    .remove(sku)
                    .ok_or_else(|| format!("{event} removes a SKU not in the cart"))?;
            }
            _ => return Err(format!("event {event} cannot happen in state {self:?}")),
        }
        Ok(())
    }

    /// What the entity replies after a command that led to this state.
    pub fn expected_reply(&self, kind: Kind) -> Value {
        match kind {
            Kind::Account => json!({"balance": self.balance}),
            Kind::Cart => self.expected_view(kind),
        }
    }

    /// The entity's view in this state.
    pub fn expected_view(&self, kind: Kind) -> Value {
        match kind {
            Kind::Account => json!({
                "owner": self.owner.clone().unwrap_or_default(),
                "balance": self.balance,
                "status": if self.owner.is_some() { "open" } else { "new" },
            }),
            Kind::Cart => json!({
                "items": self
                    .items
                    .iter()
                    .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
                    .collect::<Vec<_>>(),
                "status": "open",
            }),
        }
    }
}

/// The one key of an externally tagged JSON object, and its value.
fn single(value: &Value) -> Result<(&str, &Value), String> {
    match value.as_object() {
        Some(map) if map.len() == 1 => map
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| format!("empty object {value}")),
        _ => Err(format!("not a one-key JSON object: {value}")),
    }
}

/// Everything the client knows about one entity.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub kind: Kind,
    pub id: String,
    /// Acknowledged commands, in sequence order (each emits one event).
    pub acked: Vec<Acked>,
    /// A command sent whose outcome is unknown.
    pub in_doubt: Option<Sent>,
    /// The state after `acked` (what the next command is chosen from).
    pub model: Model,
}

impl Ledger {
    pub fn new(kind: Kind, id: String) -> Self {
        Self {
            kind,
            id,
            acked: Vec::new(),
            in_doubt: None,
            model: Model::default(),
        }
    }

    /// Records an acknowledgement of `sent`, checking the reply against the
    /// model: it must be the reply of one more event on the acked ones.
    pub fn acknowledge(
        &mut self,
        sent: Sent,
        reply: Value,
        seq_nr: u64,
        duplicate: bool,
    ) -> Result<(), String> {
        let expected_seq = self.acked.len() as u64 + 1;
        if seq_nr != expected_seq {
            return Err(format!(
                "{} {}: command {} acknowledged at seq-nr {seq_nr}, the client expected {expected_seq} (duplicate: {duplicate})",
                self.kind.type_name(),
                self.id,
                sent.command_id
            ));
        }
        let event = self.model.expected_event(self.kind, &sent.payload)?;
        let mut next = self.model.clone();
        next.apply(self.kind, &event)?;
        let expected = next.expected_reply(self.kind);
        if reply != expected {
            return Err(format!(
                "{} {}: command {} replied {reply}, the fold of its events gives {expected}",
                self.kind.type_name(),
                self.id,
                sent.command_id
            ));
        }
        self.model = next;
        self.acked.push(Acked {
            command_id: sent.command_id,
            payload: sent.payload,
            reply,
            seq_nr,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_refuses_an_overdraft_and_a_second_open() {
        let mut m = Model::default();
        m.apply(Kind::Account, &json!({"opened": {"owner": "a"}}))
            .expect("open");
        m.apply(Kind::Account, &json!({"deposited": {"amount": 5}}))
            .expect("deposit");
        assert!(
            m.apply(Kind::Account, &json!({"withdrawn": {"amount": 6}}))
                .is_err()
        );
        assert!(
            m.apply(Kind::Account, &json!({"opened": {"owner": "b"}}))
                .is_err()
        );
        assert_eq!(m.expected_reply(Kind::Account), json!({"balance": 5}));
    }

    #[test]
    fn generated_commands_are_valid_in_the_state_they_are_chosen_from() {
        let mut rng = fastrand::Rng::with_seed(7);
        for kind in [Kind::Account, Kind::Cart] {
            let mut m = Model::default();
            for _ in 0..500 {
                let command = m.next_command(kind, &mut rng);
                let event = m.expected_event(kind, &command).expect("event");
                m.apply(kind, &event).expect("valid in its state");
            }
        }
    }
}
