//! The Linux scheduling policy of kubegate's threads (`server.scheduling`).
//!
//! Under `SCHED_OTHER` a thread woken by its socket may preempt the thread running on
//! its core. kubegate's workers are woken for every answer of the API server, and when
//! the API server shares the cores (it does on a small node, and in the benchmarks) they
//! preempted its workers in the middle of a batch: each side then ran dry, slept and was
//! woken again, a context switch and cold caches per request for every process (the
//! README's "128-connection slow mode"). `SCHED_BATCH` is the same fair scheduler, the
//! same weight and nice value; the one difference is that a waking thread waits for the
//! running one's turn to end instead of cutting in. An idle core still runs it at once.
//!
//! [`apply`] sets the calling thread's policy; threads created after it inherit it, so
//! it is called on the main thread before the actix system and its workers start.

use crate::config::Scheduling;

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The thread now runs under the policy asked for (or already did).
    Set,
    /// The thread was started under another policy than `SCHED_OTHER` (`chrt`, a
    /// systemd unit's `CPUSchedulingPolicy=`): an operator's choice, kept. Its name.
    Kept(String),
}

/// Switches the calling thread (and the threads it creates from now on) to `policy`,
/// keeping its nice value, when it runs under `SCHED_OTHER`; a thread started under
/// another policy keeps it. `Normal` changes nothing. Fails where the system refuses
/// the change (a seccomp filter, a non-Linux system); the caller logs it and goes on.
#[cfg(target_os = "linux")]
pub fn apply(policy: Scheduling) -> Result<Applied, String> {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
        NormalThreadSchedulePolicy, RealtimeThreadSchedulePolicy, ThreadPriority,
        ThreadPriorityValue, ThreadSchedulePolicy,
    };
    if policy == Scheduling::Normal {
        return Ok(Applied::Set);
    }
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    match thread_schedule_policy().map_err(|e| format!("reading the policy: {e:?}"))? {
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other) => {}
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch) => return Ok(Applied::Set),
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle) => {
            return Ok(Applied::Kept("SCHED_IDLE".into()))
        }
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo) => {
            return Ok(Applied::Kept("SCHED_FIFO".into()))
        }
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::RoundRobin) => {
            return Ok(Applied::Kept("SCHED_RR".into()))
        }
        ThreadSchedulePolicy::Realtime(now) => {
            return Ok(Applied::Kept(format!("the real-time policy {now:?}")))
        }
    }
    // thread-priority sets a normal policy's nice value along with it, from a 0-99 scale
    // of its own: find the value on that scale that keeps the nice value the thread has
    let nice = rustix::process::getpriority_process(None)
        .map_err(|e| format!("reading the nice value: {e}"))?;
    let priority = (0..=u8::MAX)
        .filter_map(|p| ThreadPriorityValue::try_from(p).ok())
        .map(ThreadPriority::Crossplatform)
        .find(|p| p.to_posix(batch).ok() == Some(nice))
        .ok_or_else(|| format!("no priority keeps the nice value {nice}"))?;
    set_thread_priority_and_policy(thread_native_id(), priority, batch)
        .map(|()| Applied::Set)
        .map_err(|e| format!("{e:?}"))
}

/// Only Linux has `SCHED_BATCH`.
#[cfg(not(target_os = "linux"))]
pub fn apply(policy: Scheduling) -> Result<Applied, String> {
    match policy {
        Scheduling::Normal => Ok(Applied::Set),
        Scheduling::Batch => Err("SCHED_BATCH exists on Linux only".into()),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// On a thread of its own (the policy is per thread, and inherited by the threads
    /// it creates): the policy changes, the nice value does not, and a thread created
    /// afterwards has the policy too.
    #[test]
    fn batch_is_set_inherited_and_keeps_the_nice_value() {
        std::thread::spawn(|| {
            let nice = rustix::process::getpriority_process(None).unwrap();
            assert_eq!(apply(Scheduling::Batch), Ok(Applied::Set));
            assert_eq!(policy_of_this_thread(), 3, "SCHED_BATCH");
            // again: already so
            assert_eq!(apply(Scheduling::Batch), Ok(Applied::Set));
            assert_eq!(rustix::process::getpriority_process(None).unwrap(), nice);
            let child = std::thread::spawn(policy_of_this_thread).join().unwrap();
            assert_eq!(child, 3, "a thread created after inherits SCHED_BATCH");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn normal_changes_nothing() {
        std::thread::spawn(|| {
            let before = policy_of_this_thread();
            assert_eq!(apply(Scheduling::Normal), Ok(Applied::Set));
            assert_eq!(policy_of_this_thread(), before);
        })
        .join()
        .unwrap();
    }

    /// A thread started under another policy (here SCHED_IDLE, which any thread may
    /// take) keeps it: an operator's `chrt` or systemd `CPUSchedulingPolicy=` wins.
    #[test]
    fn a_policy_chosen_at_start_is_kept() {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadPriority, ThreadSchedulePolicy,
        };
        std::thread::spawn(|| {
            // thread-priority switches the policy first, then sets the nice value of
            // SCHED_IDLE's scale (0); a user without privileges running under `nice`
            // may not lower it, and only that second step is refused: the policy is
            // what is checked
            let _ = set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Min,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
            );
            assert_eq!(policy_of_this_thread(), 5, "SCHED_IDLE");
            assert_eq!(
                apply(Scheduling::Batch),
                Ok(Applied::Kept("SCHED_IDLE".into()))
            );
            assert_eq!(policy_of_this_thread(), 5, "still SCHED_IDLE");
        })
        .join()
        .unwrap();
    }

    /// The `policy` field of `/proc/thread-self/stat` (the 41st), as the kernel reports
    /// it: 0 `SCHED_OTHER`, 3 `SCHED_BATCH`.
    fn policy_of_this_thread() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // the fields after the command name (in parentheses, which may hold spaces)
        // start with the 3rd
        let (_, fields) = stat.rsplit_once(')').unwrap();
        fields
            .split_whitespace()
            .nth(41 - 3)
            .unwrap()
            .parse()
            .unwrap()
    }
}
