//! With `synchronous=FULL` every commit waits for the disk (an `fdatasync`, about as long as
//! recording an event takes the CPU). The store then commits the event's record on the calling
//! thread while this thread appends the event to the shift log and builds its automerge change,
//! so the two overlap instead of adding up. The log is moved here for the job and back, so
//! nothing is shared between the threads.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use patrol_core::{LocalChange, LogError, PreparedEvent, ShiftLog};

use crate::error::{Error, Result};

type Job = (Box<ShiftLog>, PreparedEvent);
type Done = (Box<ShiftLog>, std::result::Result<LocalChange, LogError>);

/// One thread that appends prepared events to a shift log, one job at a time.
#[derive(Debug)]
pub(crate) struct ChangeBuilder {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl ChangeBuilder {
    pub(crate) fn spawn() -> Result<Self> {
        let (jobs, job_rx) = sync_channel::<Job>(1);
        let (done_tx, done) = sync_channel::<Done>(1);
        let thread = std::thread::Builder::new()
            .name("patrol-changes".into())
            .spawn(move || {
                while let Ok((mut log, event)) = job_rx.recv() {
                    let change = log.append(event);
                    if done_tx.send((log, change)).is_err() {
                        break;
                    }
                }
            })
            .map_err(Error::Thread)?;
        Ok(ChangeBuilder {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Hands `log` over to append `event`; [`Self::finish`] gives it back. If the thread is
    /// gone, so is the log (the store loads it again).
    pub(crate) fn start(&self, log: Box<ShiftLog>, event: PreparedEvent) -> Result<()> {
        let stopped = || Error::Thread(std::io::Error::other("the change builder has stopped"));
        match &self.jobs {
            Some(jobs) => jobs.send((log, event)).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }

    /// Waits for the job [`Self::start`] handed over: the log and the change, or `None` if the
    /// thread died (the log is then lost and must be loaded again from the store).
    pub(crate) fn finish(&self) -> Option<Done> {
        self.done.recv().ok()
    }
}

impl Drop for ChangeBuilder {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
