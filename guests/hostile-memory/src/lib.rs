//! A guest that eats memory: `{"grow":{}}` allocates 1 MiB blocks and keeps
//! them until something stops it; `{"ok":{}}` persists one event. For tests only.

use serde::{Deserialize, Serialize};
use stead_sdk::{Context, Effect, EventSourced};

#[derive(Default, Serialize, Deserialize)]
pub struct Hog {
    oks: u64,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmd {
    Grow {},
    Ok {},
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ev {
    Oked {},
}

impl EventSourced for Hog {
    const TYPE_NAME: &'static str = "hostile-memory";
    const VERSION: &'static str = "0.1.0";
    type Command = Cmd;
    type Event = Ev;
    type Reply = u64;
    type Error = String;
    type View = u64;

    fn initial(_id: &str) -> Self {
        Hog::default()
    }

    fn handle(&self, _ctx: &Context, cmd: Cmd) -> Result<Effect<Ev, u64>, String> {
        match cmd {
            Cmd::Grow {} => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    blocks.push(core::hint::black_box(vec![1u8; 1 << 20]));
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

stead_sdk::export_entity!(Hog);
