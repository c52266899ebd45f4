//! drgit recovers a GitOps-managed Kubernetes cluster from its off-site
//! backups. What Git can express becomes a reviewed change to the manifests;
//! the rest runs only after checks and a confirmation.
//!
//! Modules, top to bottom: `cli` parses the command line, `scenario` holds
//! the runbook procedures, which use `manifest` (format-preserving YAML
//! edits), `gitops` (the working copy and the forge), `cluster` (the Kubernetes
//! API), `backup` (the backup store and its
//! catalogs) and `config`.

pub mod backup;
pub mod cert;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod error;
pub mod gitops;
pub mod health;
pub mod manifest;
pub mod metrics;
pub mod output;
pub mod plan;
pub mod private;
pub mod scenario;
pub mod timearg;
pub mod wait;

/// Picks rustls' process-wide crypto provider (ring) once: the HTTP
/// clients drgit links (kube, octocrab, aws-sdk-s3) enable more than one,
/// and rustls then refuses to guess.
pub(crate) fn init_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Set by `-q`: progress lines stay quiet.
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One line of progress on stderr while drgit waits (unless `-q`).
pub fn progress(line: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{line}");
    }
}
