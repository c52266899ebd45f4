//! The Kubernetes API: a kube client from kubeconfig (or in-cluster), with
//! retries, exec and Secrets here; CloudNativePG in `cnpg`, Argo CD in
//! `argocd`, Jobs, pods and logs in `workload`.
//!
//! A blocking facade over the async client, like the forge: the scenarios
//! stay plain sequential code.

pub mod argocd;
pub mod cnpg;
pub mod rbac;
pub mod talos;
pub mod workload;

pub use argocd::AppState;
pub use cnpg::{BackupState, ClusterState};
pub use workload::{JobState, PodInfo};

use std::path::Path;
use std::time::Duration;

use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot load the Kubernetes configuration{}: {source}", path.as_ref().map(|p| format!(" {p}")).unwrap_or_default())]
    Config {
        path: Option<String>,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("Kubernetes API: cannot {what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error(
        "no Argo CD Application in namespace {namespace} deploys {path}; set `[argocd] application`"
    )]
    NoApplication { namespace: String, path: String },
}

/// What a command run in a pod said.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    /// The API's status channel said Success.
    pub success: bool,
    pub exit_code: Option<i32>,
    /// The status channel's message on failure.
    pub message: String,
}

fn transient(e: &kube::Error) -> bool {
    match e {
        // A 409 Conflict (an update raced another) is worth another try;
        // a 409 AlreadyExists is an answer.
        kube::Error::Api(s) => {
            s.code >= 500 || (s.code == 409 && s.reason != "AlreadyExists") || s.code == 429
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

pub struct Kube {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Kube {
    /// From `kubeconfig` (else `$KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account) and `context` (else the current one).
    pub fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Kube, ClusterError> {
        crate::init_tls();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Config {
                path: None,
                source: Box::new(e),
            })?;
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let err = |source: Box<dyn std::error::Error + Send + Sync>| ClusterError::Config {
            path: kubeconfig.map(|p| p.display().to_string()),
            source,
        };
        let client = rt.block_on(async {
            let config = match kubeconfig {
                Some(path) => {
                    let kc = Kubeconfig::read_from(path).map_err(|e| err(Box::new(e)))?;
                    kube::Config::from_custom_kubeconfig(kc, &options)
                        .await
                        .map_err(|e| err(Box::new(e)))?
                }
                None if context.is_some() => kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| err(Box::new(e)))?,
                None => kube::Config::infer().await.map_err(|e| err(Box::new(e)))?,
            };
            kube::Client::try_from(config).map_err(|e| err(Box::new(e)))
        })?;
        Ok(Kube { rt, client })
    }

    /// Runs one API call, again after transient failures (connection errors,
    /// 5xx, 409 conflicts, 429), a few times with backoff.
    fn call<T, F, Fut>(&self, what: String, f: F) -> Result<T, ClusterError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.rt.block_on(f()) {
                Ok(v) => return Ok(v),
                Err(e) if attempt < 4 && transient(&e) => {
                    tracing::warn!(%e, what, "Kubernetes API call failed; retrying");
                    std::thread::sleep(Duration::from_millis(100 * 2u64.pow(attempt)));
                }
                Err(e) => return Err(Self::api_err(what)(e)),
            }
        }
    }

    fn api_err(what: String) -> impl FnOnce(kube::Error) -> ClusterError {
        move |source| ClusterError::Api { what, source }
    }

    /// Runs a command in a pod's container and returns its stdout, stderr
    /// and exit status separately (the API's status channel; an exit code
    /// alone is not trusted by callers that know better).
    pub fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: &[&str],
    ) -> Result<ExecOutput, ClusterError> {
        self.exec_inner(namespace, pod, container, command, None)
    }

    /// `exec` with `input` streamed to the command's standard input (as
    /// `kubectl cp` streams a tar), 64 KiB at a time. The v4 channel
    /// protocol cannot close standard input on its own, so the command must
    /// stop reading by itself (e.g. `head -c SIZE`).
    pub fn exec_with_input(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: &[&str],
        input: &mut (dyn std::io::Read + Send),
    ) -> Result<ExecOutput, ClusterError> {
        self.exec_inner(namespace, pod, container, command, Some(input))
    }

    fn exec_inner(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: &[&str],
        input: Option<&mut (dyn std::io::Read + Send)>,
    ) -> Result<ExecOutput, ClusterError> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::AttachParams;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut ap = AttachParams::default()
            .stdin(input.is_some())
            .stdout(true)
            .stderr(true);
        if let Some(c) = container {
            ap = ap.container(c);
        }
        let what = format!("exec `{}` in pod {namespace}/{pod}", command.join(" "));
        let cmd: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        self.rt.block_on(async {
            let mut proc = api
                .exec(pod, cmd, &ap)
                .await
                .map_err(Self::api_err(what.clone()))?;
            let mut out = proc.stdout();
            let mut err = proc.stderr();
            let status = proc.take_status();
            let writer = proc.stdin();
            let write_in = async move {
                let (Some(mut w), Some(input)) = (writer, input) else {
                    return Ok::<(), std::io::Error>(());
                };
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = input.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n]).await?;
                }
                w.flush().await
            };
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let read_out = async {
                if let Some(r) = out.as_mut() {
                    let _ = r.read_to_end(&mut o).await;
                }
            };
            let read_err = async {
                if let Some(r) = err.as_mut() {
                    let _ = r.read_to_end(&mut e).await;
                }
            };
            let (_, _, written) = tokio::join!(read_out, read_err, write_in);
            if let Err(e) = written {
                tracing::warn!(%e, "standard input of the command was cut short");
            }
            let status = match status {
                Some(s) => s.await,
                None => None,
            };
            let _ = proc.join().await;
            let (ok, exit_code, message) = match &status {
                Some(s) if s.status.as_deref() == Some("Success") => (true, Some(0), String::new()),
                Some(s) => {
                    let code = s
                        .details
                        .as_ref()
                        .and_then(|d| d.causes.as_ref())
                        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
                        .and_then(|c| c.message.as_deref())
                        .and_then(|m| m.parse().ok());
                    (false, code, s.message.clone().unwrap_or_default())
                }
                None => (false, None, "no status from the API server".into()),
            };
            Ok(ExecOutput {
                stdout: String::from_utf8_lossy(&o).into_owned(),
                stderr: String::from_utf8_lossy(&e).into_owned(),
                success: ok,
                exit_code,
                message,
            })
        })
    }

    /// Reads one key of a Secret. The value is returned to the caller only;
    /// it is never logged or put in an error.
    pub fn secret_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, ClusterError> {
        use k8s_openapi::api::core::v1::Secret;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = self.call(format!("read Secret {namespace}/{name}"), || {
            api.get_opt(name)
        })?;
        Ok(secret.and_then(|s| s.data).and_then(|d| {
            d.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
        }))
    }
}
