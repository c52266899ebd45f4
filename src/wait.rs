//! Waiting: one poll loop for every wait (a pull request's merge, Argo CD's
//! sync, a recovery, a Backup), backing off between looks and hearing
//! Ctrl-C between them; and the Ctrl-C flag itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one look at the world found.
pub enum Poll<T> {
    Ready(T),
    /// Not yet; what was seen, for progress lines and the timeout message.
    Waiting(String),
}

/// A wait that ran out: how long, and what was seen last.
#[derive(Debug)]
pub struct TimedOut {
    pub waited: Duration,
    pub last: String,
}

/// Why a wait ended without its answer.
#[derive(Debug)]
pub enum Stopped<E> {
    /// Ctrl-C.
    Interrupted,
    /// The check failed.
    Failed(E),
    TimedOut(TimedOut),
}

/// Calls `check` until it is ready, at intervals starting at `every` and
/// doubling up to `max_every`, until `timeout`; hears Ctrl-C between looks
/// and while sleeping. Progress goes to stderr when what is seen changes.
pub fn poll_until<T, E>(
    timeout: Duration,
    (every, max_every): (Duration, Duration),
    stop: &AtomicBool,
    mut check: impl FnMut(Duration) -> Result<Poll<T>, E>,
) -> Result<T, Stopped<E>> {
    // A poll interval of 0 in the config would hammer the API.
    let every = every.max(Duration::from_millis(10));
    let start = Instant::now();
    let mut delay = every;
    let mut last = String::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(Stopped::Interrupted);
        }
        match check(start.elapsed()).map_err(Stopped::Failed)? {
            Poll::Ready(v) => return Ok(v),
            Poll::Waiting(seen) => {
                if seen != last {
                    crate::progress(&format!("[{:>4}s] {seen}", start.elapsed().as_secs()));
                    last = seen;
                }
            }
        }
        if start.elapsed() >= timeout {
            return Err(Stopped::TimedOut(TimedOut {
                waited: start.elapsed(),
                last,
            }));
        }
        if !sleep(delay, stop) {
            return Err(Stopped::Interrupted);
        }
        delay = (delay * 2).min(max_every.max(every));
    }
}

/// Sleeps in short slices; false when Ctrl-C was pressed meanwhile.
pub fn sleep(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    true
}

/// A stop flag set by Ctrl-C (SIGINT/SIGTERM), installed once.
pub fn stop_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            eprintln!("\nstopping after the current wait; `drgit resume` continues");
            STOP.store(true, Ordering::Relaxed);
        });
    });
    &STOP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_timed_out_failed_and_interrupted() {
        let stop = AtomicBool::new(false);
        let mut n = 0;
        let ms = Duration::from_millis(1);
        let r: Result<u32, Stopped<()>> =
            poll_until(Duration::from_secs(5), (ms, ms), &stop, |_| {
                n += 1;
                Ok(if n == 3 {
                    Poll::Ready(n)
                } else {
                    Poll::Waiting(format!("look {n}"))
                })
            });
        assert_eq!(r.unwrap(), 3);
        let r: Result<(), Stopped<()>> = poll_until(Duration::ZERO, (ms, ms), &stop, |_| {
            Ok(Poll::Waiting("never".into()))
        });
        assert!(matches!(r, Err(Stopped::TimedOut(t)) if t.last == "never"));
        let r: Result<(), Stopped<&str>> =
            poll_until(Duration::from_secs(5), (ms, ms), &stop, |_| Err("broken"));
        assert!(matches!(r, Err(Stopped::Failed("broken"))));
        stop.store(true, Ordering::Relaxed);
        let r: Result<(), Stopped<()>> =
            poll_until(Duration::from_secs(5), (ms, ms), &stop, |_| {
                Ok(Poll::Waiting("x".into()))
            });
        assert!(matches!(r, Err(Stopped::Interrupted)));
    }
}
