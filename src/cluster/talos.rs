//! talosctl, the user's own (matched to their cluster), run as a child
//! process with `[talos] talosconfig` and `context` passed through; and the
//! readers of what it prints.
//!
//! `talosctl -n NODE service etcd` prints a block per node (cmd/talosctl/
//! cmd/talos/service.go): `NODE`, `ID`, `STATE` (`Running`, `Preparing`,
//! `Failed`, …), `HEALTH` (`OK`, `Fail`, `?`), `EVENTS`. `talosctl etcd
//! members` prints a table whose PEER URLS name each member; without
//! quorum it fails. A node whose API does not answer fails with gRPC
//! `code = Unavailable` in an `N error(s) occurred:` list on stderr, one
//! `* NODE: …` line each.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum TalosError {
    #[error(
        "cannot run {bin}: {source}. Install talosctl (the version of your cluster) or set `[talos] talosctl` in drgit.toml"
    )]
    Spawn { bin: String, source: std::io::Error },
}

/// How talosctl is run.
#[derive(Debug, Clone)]
pub struct Talosctl {
    pub bin: String,
    pub talosconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// `-e`: the endpoints talosctl talks to, when set (else talosconfig's).
    pub endpoints: Vec<String>,
    /// How long one call may take before it is killed: `etcd members` and
    /// `etcd snapshot` open an etcd client on the node that waits for etcd
    /// to be ready (etcd client/v3 `defaultWaitForReady`), so with etcd not
    /// listening they block instead of failing.
    pub timeout: Duration,
}

/// What one talosctl run printed.
#[derive(Debug, Clone, Serialize)]
pub struct TalosOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// Killed after the call's timeout.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

impl TalosOutput {
    /// The last lines of both streams, for an error.
    pub fn tail(&self, lines: usize) -> String {
        let all = format!("{}{}", self.stdout, self.stderr);
        let v: Vec<&str> = all.lines().filter(|l| !l.trim().is_empty()).collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Talosctl {
    fn argv(&self, nodes: &[String], args: &[&str]) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(c) = &self.talosconfig {
            v.push("--talosconfig".to_string());
            v.push(c.display().to_string());
        }
        if let Some(c) = &self.context {
            v.push("--context".to_string());
            v.push(c.clone());
        }
        if !self.endpoints.is_empty() {
            v.push("-e".to_string());
            v.push(self.endpoints.join(","));
        }
        if !nodes.is_empty() {
            v.push("-n".to_string());
            v.push(nodes.join(","));
        }
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }

    /// The command line as a user would type it (for plans).
    pub fn command_line(&self, nodes: &[String], args: &[&str]) -> String {
        let mut v = vec![self.bin.clone()];
        v.extend(self.argv(nodes, args));
        v.join(" ")
    }

    /// Runs one call with the ordinary timeout.
    pub fn run(&self, nodes: &[String], args: &[&str]) -> Result<TalosOutput, TalosError> {
        self.run_for(nodes, args, self.timeout)
    }

    /// Runs one call, killed (and reaped) once `timeout` has passed: its
    /// output then says so and `timed_out` is set.
    pub fn run_for(
        &self,
        nodes: &[String],
        args: &[&str],
        timeout: Duration,
    ) -> Result<TalosOutput, TalosError> {
        let line = self.command_line(nodes, args);
        tracing::debug!(command = %line, "talosctl");
        let mut child = Command::new(&self.bin)
            .args(self.argv(nodes, args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| TalosError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let started = Instant::now();
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() >= timeout => {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break None,
            }
        };
        let stdout = out.join().unwrap_or_default();
        let mut stderr = err.join().unwrap_or_default();
        if timed_out {
            tracing::debug!(command = %line, ?timeout, "talosctl killed after its timeout");
            stderr.push_str(&format!(
                "drgit: `{line}` did not finish within {}s and was killed\n",
                timeout.as_secs()
            ));
        }
        Ok(TalosOutput {
            success: !timed_out && status.is_some_and(|s| s.success()),
            stdout,
            stderr,
            timed_out,
        })
    }
}

/// Versions in `talosctl version` output (pkg/version's long form): the
/// client's `Tag:`, and each `Server:` block's `NODE:` with its `Tag:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Versions {
    pub client: Option<String>,
    pub servers: Vec<(String, String)>,
}

pub fn parse_version(stdout: &str) -> Versions {
    let mut v = Versions::default();
    let mut node: Option<String> = None;
    let mut in_server = false;
    for line in stdout.lines() {
        let t = line.trim();
        if t == "Client:" {
            in_server = false;
        } else if t == "Server:" {
            in_server = true;
            node = None;
        } else if let Some(n) = t.strip_prefix("NODE:") {
            node = Some(n.trim().to_string());
        } else if let Some(tag) = t.strip_prefix("Tag:") {
            let tag = tag.trim().to_string();
            if !in_server {
                v.client = Some(tag);
            } else if let Some(n) = node.take() {
                v.servers.push((n, tag));
            }
        }
    }
    v
}

/// One node's etcd service, as `service etcd` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceState {
    pub node: String,
    pub state: String,
    pub health: String,
    /// The newest event first, as printed.
    pub events: Vec<String>,
}

impl ServiceState {
    /// Running and healthy: a live member.
    pub fn healthy(&self) -> bool {
        self.state == "Running" && self.health == "OK"
    }
    /// Waiting for a bootstrap after a reset.
    pub fn preparing(&self) -> bool {
        self.state == "Preparing"
    }
}

/// The `service etcd` blocks in talosctl's output.
pub fn parse_service(stdout: &str) -> Vec<ServiceState> {
    let mut out: Vec<ServiceState> = Vec::new();
    let mut in_events = false;
    for line in stdout.lines() {
        let (field, value) = match line.split_once(char::is_whitespace) {
            Some((f, v)) if !line.starts_with(' ') => (f, v.trim()),
            _ => ("", line.trim()),
        };
        match field {
            "NODE" => {
                out.push(ServiceState {
                    node: value.to_string(),
                    state: String::new(),
                    health: String::new(),
                    events: Vec::new(),
                });
                in_events = false;
            }
            "STATE" => {
                if let Some(s) = out.last_mut() {
                    s.state = value.to_string();
                }
            }
            "HEALTH" => {
                if let Some(s) = out.last_mut() {
                    s.health = value.to_string();
                }
            }
            "EVENTS" => {
                in_events = true;
                if let Some(s) = out.last_mut() {
                    s.events.push(value.to_string());
                }
            }
            "" if in_events && !value.is_empty() => {
                if let Some(s) = out.last_mut() {
                    s.events.push(value.to_string());
                }
            }
            _ => in_events = false,
        }
    }
    out
}

/// The nodes talosctl could not reach (`* NODE: rpc error: code =
/// Unavailable …` on stderr).
pub fn unreachable(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("* ")?;
            let (node, rest) = l.split_once(": ")?;
            rest.contains("code = Unavailable")
                .then(|| node.to_string())
        })
        .collect()
}

/// The hosts of the voting members `etcd members` lists (from PEER URLS;
/// a learner, LEARNER `true`, has not joined yet).
pub fn member_hosts(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("NODE"))
        .skip(1)
        .filter(|l| l.split_whitespace().last() != Some("true"))
        .filter_map(|l| {
            let urls = l.split_whitespace().find(|w| w.contains("://"))?;
            url_host(urls.split(',').next()?)
        })
        .collect()
}

/// The host of `https://HOST:PORT`, an IPv6 one without its brackets
/// (`https://[fd00::1]:2380`).
fn url_host(url: &str) -> Option<String> {
    let authority = url.split("://").nth(1)?.split('/').next()?;
    Some(host_of(authority))
}

/// The host of `host`, `host:port`, `[v6]:port` (and a bare IPv6
/// address): a peer URL's authority, a talosconfig endpoint.
pub fn host_of(authority: &str) -> String {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.parse::<u16>().is_ok() => h.to_string(),
        _ => authority.to_string(),
    }
}

/// `talosctl get machinetype` (cmd/talosctl/cmd/talos/output/table.go: a
/// NODE column first; the resource's own column, its type, last): each
/// node with its machine type (`controlplane`, `init`, `worker`).
pub fn machine_types(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("NODE"))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 6).then(|| (cols[0].to_string(), cols[cols.len() - 1].to_string()))
        })
        .collect()
}

impl ServiceState {
    /// The newest event (talosctl lists them newest first).
    fn last_event(&self) -> &str {
        self.events.first().map_or("", String::as_str)
    }

    /// etcd gave up waiting for the bootstrap: `Failed to run pre stage:
    /// failed to build initial etcd cluster: … timeout` after
    /// `constants.EtcdJoinTimeout` (30 minutes; talos v1.11
    /// internal/app/machined/pkg/system/services/etcd.go
    /// `buildInitialCluster`).
    pub fn join_timed_out(&self) -> bool {
        // The event runs over lines: its `timeout` may be the next one.
        // A canceled wait (a bootstrap stopping the service) is not one.
        let text = self
            .events
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        self.state == "Failed"
            && self
                .last_event()
                .contains("failed to build initial etcd cluster")
            && text.contains("timeout")
            && !text.contains("context canceled")
    }

    /// The restore from the snapshot failed in etcd's pre stage (talos
    /// v1.11 services/etcd.go `recoverFromSnapshot`: `error recovering from
    /// the snapshot`, `error verifying snapshot`): its event.
    pub fn restore_failed(&self) -> Option<&str> {
        let e = self.last_event();
        (self.state == "Failed"
            && (e.contains("error recovering from the snapshot")
                || e.contains("error verifying snapshot")))
        .then_some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_with_ipv6_and_several_peer_urls() {
        let out = "NODE   ID   HOSTNAME   PEER URLS   CLIENT URLS   LEARNER\nfd00::10   1   cp-1   https://[fd00::10]:2380,https://10.0.0.10:2380   https://[fd00::10]:2379   false\n10.0.0.11   2   cp-2   https://10.0.0.11:2380   https://10.0.0.11:2379   false\n";
        assert_eq!(member_hosts(out), vec!["fd00::10", "10.0.0.11"]);
    }

    #[test]
    fn machine_types_per_node() {
        let out = "NODE         NAMESPACE   TYPE          ID             VERSION   TYPE\n172.20.0.2   config      MachineType   machine-type   2         controlplane\n172.20.0.3   config      MachineType   machine-type   1         init\n";
        assert_eq!(
            machine_types(out),
            vec![
                ("172.20.0.2".to_string(), "controlplane".to_string()),
                ("172.20.0.3".to_string(), "init".to_string())
            ]
        );
    }

    #[test]
    fn versions_of_client_and_nodes() {
        // The shape of `talosctl -n 10.0.0.2,10.0.0.3 version` in v1.11
        // (cmd/talosctl/cmd/talos/version.go): `Server:` once, before it
        // connects, then a NODE: block per node.
        let out = "Client:\n\tTag:         v1.11.1\n\tSHA:         e2c0a6e3\n\tBuilt:       \n\tGo version:  go1.24.6\n\tOS/Arch:     linux/amd64\nServer:\n\tNODE:        10.0.0.2\n\tTag:         v1.11.0\n\tSHA:         1d2c3b4a\n\tEnabled:     RBAC\n\tNODE:        10.0.0.3\n\tTag:         v1.11.1\n";
        let v = parse_version(out);
        assert_eq!(v.client.as_deref(), Some("v1.11.1"));
        assert_eq!(
            v.servers,
            vec![
                ("10.0.0.2".to_string(), "v1.11.0".to_string()),
                ("10.0.0.3".to_string(), "v1.11.1".to_string())
            ]
        );
    }

    #[test]
    fn service_blocks_are_read_per_node() {
        let text = "NODE     192.168.0.230\nID       etcd\nSTATE    Running\nHEALTH   OK\nEVENTS   [Running]: Health check successful (12s ago)\n         [Preparing]: Running pre state (20s ago)\nNODE     192.168.0.231\nID       etcd\nSTATE    Preparing\nHEALTH   ?\nEVENTS   [Preparing]: Running pre state (30s ago)\n";
        let s = parse_service(text);
        assert_eq!(s.len(), 2);
        assert!(s[0].healthy() && !s[0].preparing());
        assert_eq!(s[0].events.len(), 2);
        assert!(s[1].preparing() && !s[1].healthy());
        assert_eq!(s[1].node, "192.168.0.231");
    }

    #[test]
    fn unreachable_nodes_and_members_are_read() {
        let err = "error getting service: 1 error occurred:\n\t* 192.168.0.231: rpc error: code = Unavailable desc = connection error\n\n";
        assert_eq!(unreachable(err), ["192.168.0.231"]);
        let members = "NODE            ID                 HOSTNAME      PEER URLS                    CLIENT URLS                  LEARNER\n192.168.0.230   0000000000000001   talos-cp-1    https://192.168.0.230:2380   https://192.168.0.230:2379   false\n192.168.0.230   0000000000000002   talos-cp-2    https://192.168.0.231:2380   https://192.168.0.231:2379   false\n";
        assert_eq!(member_hosts(members), ["192.168.0.230", "192.168.0.231"]);
        let learning = members.replace("2379   false\n", "2379   true\n");
        assert_eq!(
            member_hosts(&learning),
            Vec::<String>::new(),
            "learners have not joined"
        );
        let one_learner = format!(
            "{members}192.168.0.230   0000000000000003   talos-cp-3    https://192.168.0.232:2380   https://192.168.0.232:2379   true\n"
        );
        assert_eq!(member_hosts(&one_learner).len(), 2);
    }
}
