//! A guest that never returns: `{"spin":{}}` loops forever inside
//! `handle-command`; `{"ok":{}}` persists one event. For tests only.

use serde::{Deserialize, Serialize};
use stead_sdk::{Context, Effect, EventSourced};

#[derive(Default, Serialize, Deserialize)]
pub struct Spin {
    oks: u64,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmd {
    Spin {},
    Ok {},
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ev {
    Oked {},
}

impl EventSourced for Spin {
    const TYPE_NAME: &'static str = "hostile-loop";
    const VERSION: &'static str = "0.1.0";
    type Command = Cmd;
    type Event = Ev;
    type Reply = u64;
    type Error = String;
    type View = u64;

    fn initial(_id: &str) -> Self {
        Spin::default()
    }

    fn handle(&self, _ctx: &Context, cmd: Cmd) -> Result<Effect<Ev, u64>, String> {
        match cmd {
            Cmd::Spin {} => {
                let mut n: u64 = 0;
                loop {
                    n = core::hint::black_box(n.wrapping_add(1));
                }
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

stead_sdk::export_entity!(Spin);
