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

use std::path::PathBuf;
use std::process::Command;

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
}

/// What one talosctl run printed.
#[derive(Debug, Clone, Serialize)]
pub struct TalosOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
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

    pub fn run(&self, nodes: &[String], args: &[&str]) -> Result<TalosOutput, TalosError> {
        tracing::debug!(command = %self.command_line(nodes, args), "talosctl");
        let out = Command::new(&self.bin)
            .args(self.argv(nodes, args))
            .output()
            .map_err(|source| TalosError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        Ok(TalosOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
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
            let url = l.split_whitespace().find(|w| w.contains("://"))?;
            let host = url.split("://").nth(1)?.split(':').next()?;
            Some(host.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn versions_of_client_and_nodes() {
        // The shape of `talosctl -n 10.0.0.2,10.0.0.3 version` (pkg/version).
        let out = "Client:\n\tTag:         v1.11.1\n\tSHA:         e2c0a6e3\n\tBuilt:       \n\tGo version:  go1.24.6\n\tOS/Arch:     linux/amd64\nServer:\n\tNODE:        10.0.0.2\n\tTag:         v1.11.0\n\tSHA:         1d2c3b4a\n\tEnabled:     RBAC\nServer:\n\tNODE:        10.0.0.3\n\tTag:         v1.11.1\n";
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
    use super::*;

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
