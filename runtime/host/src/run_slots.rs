//! How many provider runs a long-running host lets happen at once, and how many requests
//! may wait for one: past that a request is answered `busy` at once instead of piling up.
//! Cached answers never take a slot.

use crate::request::Refusal;
use std::sync::{Condvar, Mutex};

pub struct RunSlots {
    /// (running, waiting)
    state: Mutex<(usize, usize)>,
    freed: Condvar,
    max_running: usize,
    max_waiting: usize,
}

pub struct RunSlot<'a>(&'a RunSlots);

impl RunSlots {
    pub fn new(max_running: usize, max_waiting: usize) -> Self {
        RunSlots {
            state: Mutex::new((0, 0)),
            freed: Condvar::new(),
            max_running: max_running.max(1),
            max_waiting,
        }
    }

    /// Enough runs to overlap network waits, few enough that CPU-bound providers do not
    /// starve cached answers on a small machine, and always more than one instance may
    /// take (`per_instance`), so a slow instance leaves slots to the others; 256 waiting.
    pub fn for_this_machine(per_instance: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        RunSlots::new((2 * cores).max(2 * per_instance), 256)
    }

    /// Runs that may happen at once: what a pooled engine must have slots for.
    pub fn max_running(&self) -> usize {
        self.max_running
    }

    pub fn acquire(&self) -> Result<RunSlot<'_>, Refusal> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 >= self.max_running {
            if s.1 >= self.max_waiting {
                return Err(Refusal::Busy(s.1));
            }
            s.1 += 1;
            while s.0 >= self.max_running {
                s = self.freed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.1 -= 1;
        }
        s.0 += 1;
        Ok(RunSlot(self))
    }
}

impl Drop for RunSlot<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).0 -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_are_bounded_and_waiters_past_the_queue_are_told_busy() {
        let slots = Arc::new(RunSlots::new(2, 1));
        let a = slots.acquire().unwrap_or_else(|_| panic!("first slot"));
        let _b = slots.acquire().unwrap_or_else(|_| panic!("second slot"));
        let waiting = Arc::new(AtomicUsize::new(0));
        let t = {
            let (slots, waiting) = (slots.clone(), waiting.clone());
            std::thread::spawn(move || {
                waiting.fetch_add(1, Ordering::SeqCst);
                let _slot = slots.acquire().is_ok();
            })
        };
        while slots.state.lock().unwrap().1 == 0 {
            std::thread::yield_now();
        }
        assert!(
            matches!(slots.acquire(), Err(Refusal::Busy(1))),
            "the queue of one is full"
        );
        drop(a);
        t.join().unwrap();
        assert_eq!(waiting.load(Ordering::SeqCst), 1);
    }
}
