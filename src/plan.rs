//! Plans: ordered steps that describe themselves, re-check their
//! precondition right before they run, run, and are journaled.
//!
//! The journal (`.git/drgit/journal.json`, written atomically after every
//! step) holds what the steps need to go on and what each one produced, so
//! an interrupted run (Ctrl-C, a lost connection, a closed laptop) resumes
//! with `drgit resume` at the first unfinished step, its precondition
//! checked again. A finished destructive step is never repeated. Ctrl-C
//! stops at the next point where a step waits, and between steps.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub description: String,
    pub status: Status,
    #[serde(default)]
    pub output: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// What a run needs to go on, and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalData {
    pub scenario: String,
    pub started_at: String,
    /// The scenario's own parameters (commit, pull request, cluster, …).
    pub params: Value,
    pub steps: Vec<StepRecord>,
}

pub struct Journal {
    path: PathBuf,
    pub data: JournalData,
}

impl Journal {
    pub fn path_in(git_dir: &Path) -> PathBuf {
        git_dir.join("drgit/journal.json")
    }

    pub fn create(git_dir: &Path, data: JournalData) -> Result<Journal, Error> {
        let j = Journal {
            path: Self::path_in(git_dir),
            data,
        };
        j.save()?;
        Ok(j)
    }

    pub fn load(git_dir: &Path) -> Result<Option<Journal>, Error> {
        let path = Self::path_in(git_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let data = serde_json::from_str(&text).map_err(|e| Error::State {
                    path: path.display().to_string(),
                    detail: format!("unreadable journal: {e}"),
                })?;
                Ok(Some(Journal { path, data }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::State {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
        }
    }

    pub fn save(&self) -> Result<(), Error> {
        let err = |detail: String| Error::State {
            path: self.path.display().to_string(),
            detail,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let text = serde_json::to_string_pretty(&self.data).map_err(|e| err(e.to_string()))?;
        crate::manifest::write_atomic(&self.path, text.as_bytes()).map_err(|e| err(e.to_string()))
    }

    /// The output a finished step left.
    pub fn output(&self, step: &str) -> Option<&Value> {
        self.data
            .steps
            .iter()
            .find(|s| s.name == step && s.status == Status::Done)
            .map(|s| &s.output)
    }

    pub fn finished(&self) -> bool {
        self.data.steps.iter().all(|s| s.status == Status::Done)
    }

    /// The journal is finished with: keep it as `journal.done.json`.
    pub fn close(self) {
        let _ = std::fs::rename(&self.path, self.path.with_file_name("journal.done.json"));
    }
}

/// One step of a plan.
pub trait Step {
    fn name(&self) -> &'static str;
    fn describe(&self) -> String;
    /// Deletes or resets something: confirmed before it runs.
    fn destructive(&self) -> bool {
        false
    }
    /// Whether this run of a destructive step needs the confirmation (a
    /// step with nothing to destroy this time says no).
    fn confirm(&self, _journal: &Journal) -> bool {
        true
    }
    /// Checked right before the step runs (also after a resume).
    fn check(&self, _journal: &Journal) -> Result<(), Error> {
        Ok(())
    }
    fn run(&self, journal: &Journal, stop: &AtomicBool) -> Result<Value, Error>;
    /// Checked right after the step ran: did it do what it says?
    fn verify(&self, _journal: &Journal, _output: &Value) -> Result<(), Error> {
        Ok(())
    }
}

/// Runs the unfinished steps in order.
pub fn execute(
    steps: &[&dyn Step],
    journal: &mut Journal,
    confirm: &dyn Fn(&str) -> Result<(), Error>,
    stop: &AtomicBool,
) -> Result<(), Error> {
    for step in steps {
        let name = step.name();
        if journal.output(name).is_some() {
            continue;
        }
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted { step: name.into() });
        }
        step.check(journal)?;
        if step.destructive() && step.confirm(journal) {
            confirm(&step.describe())?;
            // What was true before the prompt may not be now.
            step.check(journal)?;
        }
        set_status(journal, name, Status::Running, Value::Null)?;
        tracing::info!(step = name, "{}", step.describe());
        let output = step.run(journal, stop)?;
        step.verify(journal, &output)?;
        set_status(journal, name, Status::Done, output)?;
    }
    Ok(())
}

fn set_status(
    journal: &mut Journal,
    name: &str,
    status: Status,
    output: Value,
) -> Result<(), Error> {
    if let Some(rec) = journal.data.steps.iter_mut().find(|s| s.name == name) {
        if status == Status::Done {
            rec.finished_at = Some(jiff::Timestamp::now().to_string());
            rec.output = output;
        }
        rec.status = status;
    }
    journal.save()
}

/// What one look at the world found.
pub enum Poll<T> {
    Ready(T),
    /// Not yet; what was seen, for progress lines and the timeout message.
    Waiting(String),
}

/// A wait that ran out: how long, and what was seen last.
#[derive(Debug)]
pub struct TimedOut {
    pub waited: std::time::Duration,
    pub last: String,
}

/// The one wait every step uses: calls `check` until it is ready, at
/// intervals starting at `every` and doubling up to `max_every`, until
/// `timeout`; hears Ctrl-C between looks. Progress goes to stderr when what
/// is seen changes.
pub fn poll_until<T>(
    step: &str,
    timeout: std::time::Duration,
    (every, max_every): (std::time::Duration, std::time::Duration),
    stop: &AtomicBool,
    mut check: impl FnMut(std::time::Duration) -> Result<Poll<T>, Error>,
) -> Result<Result<T, TimedOut>, Error> {
    let start = std::time::Instant::now();
    let mut delay = every;
    let mut last = String::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted { step: step.into() });
        }
        match check(start.elapsed())? {
            Poll::Ready(v) => return Ok(Ok(v)),
            Poll::Waiting(seen) => {
                if seen != last {
                    crate::progress(&format!("[{:>4}s] {seen}", start.elapsed().as_secs()));
                    last = seen;
                }
            }
        }
        if start.elapsed() >= timeout {
            return Ok(Err(TimedOut {
                waited: start.elapsed(),
                last,
            }));
        }
        sleep(delay, stop, step)?;
        delay = (delay * 2).min(max_every.max(every));
    }
}

/// Sleeps in short slices, giving up early when Ctrl-C was pressed.
pub fn sleep(d: std::time::Duration, stop: &AtomicBool, step: &str) -> Result<(), Error> {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted { step: step.into() });
        }
        std::thread::sleep(
            std::time::Duration::from_millis(50).min(end - std::time::Instant::now()),
        );
    }
    Ok(())
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
