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
    /// How many times it was started (more than once: an attempt was
    /// interrupted, and what it did may have happened).
    #[serde(default)]
    pub attempts: u32,
}

/// What a run needs to go on, and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalData {
    pub scenario: String,
    pub started_at: String,
    /// The scenario's own parameters, as it wrote them.
    pub params: Value,
    pub steps: Vec<StepRecord>,
}

pub struct Journal {
    path: PathBuf,
    pub data: JournalData,
}

impl Journal {
    /// How many times step `name` was started (this run included).
    pub fn attempts(&self, name: &str) -> u32 {
        self.data
            .steps
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.attempts)
    }

    pub fn path_in(git_dir: &Path) -> PathBuf {
        git_dir.join("drgit/journal.json")
    }

    /// Refuses while an unfinished journal is there: its record of what was
    /// stopped and deleted must not be lost (it is resumed, not replaced).
    pub fn refuse_if_running(git_dir: &Path) -> Result<(), Error> {
        let path = Self::path_in(git_dir);
        if path.exists() {
            return Err(Error::RunInProgress {
                path: path.display().to_string(),
            });
        }
        Ok(())
    }

    /// Starts a journal; refused while an unfinished one is there.
    pub fn create(git_dir: &Path, data: JournalData) -> Result<Journal, Error> {
        Self::refuse_if_running(git_dir)?;
        let j = Journal {
            path: Self::path_in(git_dir),
            data,
        };
        j.save()?;
        Ok(j)
    }

    /// A new journal for `scenario` with its parameters, started now.
    pub fn start(git_dir: &Path, scenario: &str, params: Value) -> Result<Journal, Error> {
        Self::create(
            git_dir,
            JournalData {
                scenario: scenario.into(),
                started_at: jiff::Timestamp::now().to_string(),
                params,
                steps: Vec::new(),
            },
        )
    }

    /// The scenario's parameters, as it wrote them.
    pub fn params_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_value(self.data.params.clone()).map_err(|e| Error::StateFile {
            path: "journal (params)".into(),
            source: Box::new(e),
        })
    }

    pub fn load(git_dir: &Path) -> Result<Option<Journal>, Error> {
        let path = Self::path_in(git_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let data = serde_json::from_str(&text).map_err(|e| Error::StateFile {
                    path: path.display().to_string(),
                    source: Box::new(e),
                })?;
                Ok(Some(Journal { path, data }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::StateFile {
                path: path.display().to_string(),
                source: Box::new(e),
            }),
        }
    }

    pub fn save(&self) -> Result<(), Error> {
        let err = |source: Box<dyn std::error::Error + Send + Sync>| Error::StateFile {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            crate::private::create_dir_all(dir).map_err(|e| err(Box::new(e)))?;
        }
        let text = serde_json::to_string_pretty(&self.data).map_err(|e| err(Box::new(e)))?;
        crate::manifest::write_atomic(&self.path, text.as_bytes()).map_err(|e| err(Box::new(e)))
    }

    /// The output a finished step left, read back as the step's type.
    pub fn output_as<T: serde::de::DeserializeOwned>(&self, step: &str) -> Result<T, Error> {
        let v = self.output(step).ok_or_else(|| Error::State {
            path: self.path.display().to_string(),
            detail: format!("step `{step}` has not finished"),
        })?;
        serde_json::from_value(v.clone()).map_err(|e| Error::StateFile {
            path: format!("{} (step `{step}`)", self.path.display()),
            source: Box::new(e),
        })
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

/// One step of a plan, run against the scenario's environment `E` (its
/// clients and parameters).
pub trait Step<E> {
    fn name(&self) -> &'static str;
    fn describe(&self, env: &E) -> String;
    /// Deletes, stops or resets something: confirmed before it runs.
    fn destructive(&self) -> bool {
        false
    }
    /// Whether this run of a destructive step needs the confirmation (a
    /// step with nothing to destroy this time says no).
    fn confirm(&self, _env: &E, _journal: &Journal) -> bool {
        true
    }
    /// Checked right before the step runs (also after a resume), and again
    /// after the confirmation of a destructive step.
    fn check(&self, _env: &E, _journal: &Journal) -> Result<(), Error> {
        Ok(())
    }
    fn run(&self, env: &E, journal: &Journal, stop: &AtomicBool) -> Result<Value, Error>;
    /// Checked right after the step ran: did it do what it says?
    fn verify(&self, _env: &E, _journal: &Journal, _output: &Value) -> Result<(), Error> {
        Ok(())
    }
}

/// How a destructive step is confirmed: `--yes`, or `word` typed at a
/// terminal (`what` says what it is, e.g. "the name of the object"); without a
/// terminal and without `--yes`, refused.
pub struct Confirmation {
    pub yes: bool,
    pub word: String,
    pub what: String,
}

impl Confirmation {
    fn ask(&self, step: &str) -> Result<(), Error> {
        use std::io::{BufRead, IsTerminal, Write};
        if self.yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::NeedsConfirmation { what: step.into() });
        }
        eprint!("{step}.\nType {} ({}) to go ahead: ", self.what, self.word);
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if line.trim() == self.word {
            Ok(())
        } else {
            Err(Error::NeedsConfirmation { what: step.into() })
        }
    }
}

/// Runs the unfinished steps in order.
pub fn execute<E>(
    env: &E,
    steps: &[&dyn Step<E>],
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
        step.check(env, journal)?;
        if step.destructive() && step.confirm(env, journal) {
            confirm(&step.describe(env))?;
            // What was true before the prompt may not be now.
            step.check(env, journal)?;
        }
        set_status(journal, name, Status::Running, Value::Null)?;
        tracing::info!(step = name, "{}", step.describe(env));
        let output = step.run(env, journal, stop)?;
        step.verify(env, journal, &output)?;
        set_status(journal, name, Status::Done, output)?;
    }
    Ok(())
}

/// Drives a journaled plan to its end: records the steps on a new
/// journal, runs the unfinished ones (confirming destructive ones), and
/// keeps the journal as `journal.done.json` when all are done. Returns the
/// journal's final content.
pub fn drive<E>(
    env: &E,
    steps: &[&dyn Step<E>],
    mut journal: Journal,
    confirmation: &Confirmation,
) -> Result<Value, Error> {
    let planned: Vec<&str> = steps.iter().map(|s| s.name()).collect();
    let recorded: Vec<&str> = journal.data.steps.iter().map(|s| s.name.as_str()).collect();
    if !recorded.is_empty() && recorded != planned {
        return Err(Error::State {
            path: journal.path.display().to_string(),
            detail: format!(
                "it records the steps {recorded:?}, but this plan has {planned:?}; finish or abandon that run with the drgit that started it"
            ),
        });
    }
    if journal.data.steps.is_empty() {
        journal.data.steps = steps
            .iter()
            .map(|s| StepRecord {
                name: s.name().into(),
                description: s.describe(env),
                status: Status::Pending,
                output: Value::Null,
                finished_at: None,
                attempts: 0,
            })
            .collect();
        journal.save()?;
    }
    execute(
        env,
        steps,
        &mut journal,
        &|what| confirmation.ask(what),
        stop_flag(),
    )?;
    let summary = serde_json::to_value(&journal.data).unwrap_or_default();
    journal.close();
    Ok(summary)
}

/// The journal of the current run, else of the last finished one.
pub fn last_journal(git_dir: &Path) -> Result<Option<JournalData>, Error> {
    if let Some(j) = Journal::load(git_dir)? {
        return Ok(Some(j.data));
    }
    let done = Journal::path_in(git_dir).with_file_name("journal.done.json");
    Ok(std::fs::read_to_string(done)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok()))
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
        if status == Status::Running {
            rec.attempts += 1;
        }
        rec.status = status;
    }
    journal.save()
}

pub use crate::wait::{Poll, TimedOut, stop_flag};

/// [`crate::wait::poll_until`] for a step: an interruption names the step.
pub fn poll_until<T>(
    step: &str,
    timeout: std::time::Duration,
    every: (std::time::Duration, std::time::Duration),
    stop: &AtomicBool,
    check: impl FnMut(std::time::Duration) -> Result<Poll<T>, Error>,
) -> Result<Result<T, TimedOut>, Error> {
    match crate::wait::poll_until(timeout, every, stop, check) {
        Ok(v) => Ok(Ok(v)),
        Err(crate::wait::Stopped::TimedOut(t)) => Ok(Err(t)),
        Err(crate::wait::Stopped::Failed(e)) => Err(e),
        Err(crate::wait::Stopped::Interrupted) => Err(Error::Interrupted { step: step.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A world with one fact a destructive step depends on.
    struct World {
        safe: Cell<bool>,
        runs: Cell<u32>,
    }

    struct Destroy;
    impl Step<World> for Destroy {
        fn name(&self) -> &'static str {
            "destroy"
        }
        fn describe(&self, _: &World) -> String {
            "Destroy the thing".into()
        }
        fn destructive(&self) -> bool {
            true
        }
        fn check(&self, w: &World, _: &Journal) -> Result<(), Error> {
            if w.safe.get() {
                Ok(())
            } else {
                Err(Error::RefuseDelete {
                    reason: "no longer safe".into(),
                })
            }
        }
        fn run(&self, w: &World, _: &Journal, _: &AtomicBool) -> Result<Value, Error> {
            w.runs.set(w.runs.get() + 1);
            Ok(Value::Bool(true))
        }
    }

    fn journal(dir: &Path) -> Journal {
        let mut j = Journal::create(
            dir,
            JournalData {
                scenario: "test".into(),
                started_at: "2026-11-26T04:00:00Z".into(),
                params: Value::Null,
                steps: Vec::new(),
            },
        )
        .unwrap();
        j.data.steps = vec![StepRecord {
            name: "destroy".into(),
            description: String::new(),
            status: Status::Pending,
            output: Value::Null,
            finished_at: None,
            attempts: 0,
        }];
        j
    }

    #[test]
    fn the_precondition_is_checked_again_after_the_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let w = World {
            safe: Cell::new(true),
            runs: Cell::new(0),
        };
        let mut j = journal(dir.path());
        // While the person reads the prompt, the world changes.
        let confirm = |_: &str| {
            w.safe.set(false);
            Ok(())
        };
        let stop = AtomicBool::new(false);
        let r = execute(&w, &[&Destroy], &mut j, &confirm, &stop);
        assert!(matches!(r, Err(Error::RefuseDelete { .. })), "{r:?}");
        assert_eq!(w.runs.get(), 0, "refused after the prompt, never run");
    }

    #[test]
    fn a_refused_confirmation_runs_nothing_and_a_finished_step_never_runs_again() {
        let dir = tempfile::tempdir().unwrap();
        let w = World {
            safe: Cell::new(true),
            runs: Cell::new(0),
        };
        let mut j = journal(dir.path());
        let stop = AtomicBool::new(false);
        let no = |what: &str| Err(Error::NeedsConfirmation { what: what.into() });
        assert!(execute(&w, &[&Destroy], &mut j, &no, &stop).is_err());
        assert_eq!(w.runs.get(), 0);
        let yes = |_: &str| Ok(());
        execute(&w, &[&Destroy], &mut j, &yes, &stop).unwrap();
        execute(&w, &[&Destroy], &mut j, &yes, &stop).unwrap();
        assert_eq!(w.runs.get(), 1, "done once, not again on resume");
        let reloaded = Journal::load(dir.path()).unwrap().unwrap();
        assert_eq!(reloaded.data.steps[0].status, Status::Done);
    }
}
