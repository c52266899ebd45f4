//! The GitOps working copy: checks before a change, a commit on a new
//! branch that touches nothing but the edited file, and the file's history.

pub mod forge;
pub mod push;
pub mod repo;

pub use push::{Lease, Pushed};
pub use repo::{Committed, GitError, Holds, Target, WorkRepo};
