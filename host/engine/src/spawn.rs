//! [`OsThreads`]: the production [`Spawner`]: each loop on its own named OS
//! thread, driven by a current-thread runtime of its own (timers only), so
//! a guest call or a durable flush blocks that loop alone.

use stead_types::{Joiner, MakeTask, Spawner};

/// One OS thread per loop.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsThreads;

impl Spawner for OsThreads {
    fn spawn(&self, name: String, make: MakeTask) -> std::io::Result<Box<dyn Joiner>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || runtime.block_on(make()))?;
        Ok(Box::new(Thread(thread)))
    }
}

struct Thread(std::thread::JoinHandle<()>);

impl Joiner for Thread {
    fn join(self: Box<Self>) -> bool {
        self.0.join().is_ok()
    }
}
