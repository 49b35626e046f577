//! A guest that traps: `{"boom":{}}` panics inside `handle-command` (a trap,
//! since guests abort on panic) after logging a warning; `{"ok":{}}` persists
//! one event. For tests only.

use serde::{Deserialize, Serialize};
use stead_sdk::{Context, Effect, EventSourced};

#[derive(Default, Serialize, Deserialize)]
pub struct Trap {
    oks: u64,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmd {
    Boom {},
    Ok {},
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ev {
    Oked {},
}

impl EventSourced for Trap {
    const TYPE_NAME: &'static str = "hostile-trap";
    const VERSION: &'static str = "0.1.0";
    type Command = Cmd;
    type Event = Ev;
    type Reply = u64;
    type Error = String;
    type View = u64;

    fn initial(_id: &str) -> Self {
        Trap::default()
    }

    fn handle(&self, _ctx: &Context, cmd: Cmd) -> Result<Effect<Ev, u64>, String> {
        match cmd {
            Cmd::Boom {} => {
                stead_sdk::log::warn("boom requested: trapping now");
                panic!("boom: this guest traps on purpose")
            }
            Cmd::Ok {} => Ok(Effect::persist(Ev::Oked {}).then_reply(self.oks + 1)),
        }
    }

    fn apply(&mut self, _event: &Ev) {
        self.oks += 1;
    }

    fn view(&self) -> u64 {
        self.oks
    }
}

stead_sdk::export_entity!(Trap);
