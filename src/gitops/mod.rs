//! The GitOps working copy: checks before a change, a commit on a new
//! branch that touches nothing but the edited file, and the file's history.

pub mod repo;

pub use repo::{GitError, WorkRepo};
