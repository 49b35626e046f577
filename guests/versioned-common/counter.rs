// The entity type `versioned`, shared by `versioned-v1` and `versioned-v2`
// (included by each, after it defines `VERSION_NUMBER` and `VERSION_TEXT`).
// Both versions have the same state layout; their replies name their version.

use serde::{Deserialize, Serialize};
use stead_sdk::{Context, Effect, EventSourced};

#[derive(Default, Serialize, Deserialize)]
pub struct Counter {
    count: u64,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmd {
    Inc {},
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ev {
    Incremented {},
}

#[derive(Serialize)]
pub struct Reply {
    version: u32,
    count: u64,
}

impl EventSourced for Counter {
    const TYPE_NAME: &'static str = "versioned";
    const VERSION: &'static str = VERSION_TEXT;
    const SNAPSHOT_EVERY: u32 = 2;
    type Command = Cmd;
    type Event = Ev;
    type Reply = Reply;
    type Error = String;
    type View = Reply;

    fn initial(_id: &str) -> Self {
        Counter::default()
    }

    fn handle(&self, _ctx: &Context, cmd: Cmd) -> Result<Effect<Ev, Reply>, String> {
        match cmd {
            Cmd::Inc {} => Ok(Effect::persist(Ev::Incremented {}).then_reply(Reply {
                version: VERSION_NUMBER,
                count: self.count + 1,
            })),
        }
    }

    fn apply(&mut self, _event: &Ev) {
        self.count += 1;
    }

    fn view(&self) -> Reply {
        Reply {
            version: VERSION_NUMBER,
            count: self.count,
        }
    }
}

stead_sdk::export_entity!(Counter);
