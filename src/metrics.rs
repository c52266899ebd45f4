//! `backups status` and `doctor` as OpenMetrics text (the Prometheus
//! exposition format, <https://prometheus.io/docs/specs/om/open_metrics_spec/>),
//! and the push of it to a Prometheus Pushgateway for the in-cluster
//! CronJob (`deploy/`).
//!
//! Every family is a gauge; each family's samples are written together, a
//! family in seconds declares its unit and ends in `_seconds`, label values
//! are escaped, and the text ends with `# EOF`.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::doctor;
use crate::health::Report;

/// Builds the text one family at a time.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, unit: Option<&str>, help: &str) {
        let _ = writeln!(self.0, "# TYPE {name} gauge");
        if let Some(unit) = unit {
            let _ = writeln!(self.0, "# UNIT {name} {unit}");
        }
        let _ = writeln!(self.0, "# HELP {name} {}", escape(help, false));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels = if labels.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v, true)))
                .collect();
            format!("{{{}}}", inner.join(","))
        };
        let _ = writeln!(self.0, "{name}{labels} {}", number(value));
    }

    fn finish(mut self) -> String {
        self.0.push_str("# EOF\n");
        self.0
    }
}

/// Backslash, newline (and in label values the double quote) escaped.
fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

fn age(now: Timestamp, t: Timestamp) -> f64 {
    (seconds(now) - seconds(t)).max(0.0)
}

/// `backups status` as metrics: per kind and lineage, the newest backup's
/// age, the count, the recoverable window, WAL gaps and problems.
pub fn backups(r: &Report) -> String {
    let mut t = Text(String::new());
    t.family(
        "drgit_backup_status_timestamp_seconds",
        Some("seconds"),
        "When drgit last read the backup store.",
    );
    t.sample("drgit_backup_status_timestamp_seconds", &[], seconds(r.now));

    // (kind, lineage, newest, count, problems)
    let mut rows: Vec<(&str, &str, Option<Timestamp>, usize, usize)> = r
        .postgres
        .iter()
        .map(|l| {
            (
                "postgres",
                l.server_name.as_str(),
                l.newest_backup,
                l.base_backups,
                l.problems.len(),
            )
        })
        .collect();
    for k in [&r.etcd, &r.kanidm] {
        rows.push((k.name, k.name, k.newest, k.count, k.problems.len()));
    }

    t.family(
        "drgit_backup_newest_age_seconds",
        Some("seconds"),
        "Age of the newest backup (PostgreSQL: base backup).",
    );
    for (kind, lineage, newest, _, _) in &rows {
        if let Some(n) = newest {
            t.sample(
                "drgit_backup_newest_age_seconds",
                &[("kind", kind), ("lineage", lineage)],
                age(r.now, *n),
            );
        }
    }
    t.family("drgit_backup_count", None, "Backups in the store.");
    for (kind, lineage, _, count, _) in &rows {
        t.sample(
            "drgit_backup_count",
            &[("kind", kind), ("lineage", lineage)],
            *count as f64,
        );
    }
    t.family(
        "drgit_backup_problems",
        None,
        "Problems backups status --check reports.",
    );
    for (kind, lineage, _, _, problems) in &rows {
        t.sample(
            "drgit_backup_problems",
            &[("kind", kind), ("lineage", lineage)],
            *problems as f64,
        );
    }

    t.family(
        "drgit_backup_active",
        None,
        "1 for the PostgreSQL lineage archiving now (the newest WAL).",
    );
    for l in &r.postgres {
        t.sample(
            "drgit_backup_active",
            &[("kind", "postgres"), ("lineage", &l.server_name)],
            if l.active { 1.0 } else { 0.0 },
        );
    }
    t.family(
        "drgit_backup_wal_newest_age_seconds",
        Some("seconds"),
        "Age of the newest archived WAL segment.",
    );
    for l in &r.postgres {
        if let Some(n) = l.newest_wal {
            t.sample(
                "drgit_backup_wal_newest_age_seconds",
                &[("kind", "postgres"), ("lineage", &l.server_name)],
                age(r.now, n),
            );
        }
    }
    t.family(
        "drgit_backup_wal_gaps",
        None,
        "Missing WAL ranges in the archive.",
    );
    for l in &r.postgres {
        t.sample(
            "drgit_backup_wal_gaps",
            &[("kind", "postgres"), ("lineage", &l.server_name)],
            l.gaps.len() as f64,
        );
    }
    for (name, help, pick) in [
        (
            "drgit_backup_window_start_timestamp_seconds",
            "Earliest point in time recoverable.",
            true,
        ),
        (
            "drgit_backup_window_end_timestamp_seconds",
            "Latest point in time recoverable (the newest commit archived).",
            false,
        ),
    ] {
        t.family(name, Some("seconds"), help);
        for l in &r.postgres {
            let at = if pick {
                l.windows.iter().map(|w| w.start).min()
            } else {
                l.windows.iter().map(|w| w.end).max()
            };
            if let Some(at) = at {
                t.sample(
                    name,
                    &[("kind", "postgres"), ("lineage", &l.server_name)],
                    seconds(at),
                );
            }
        }
    }
    t.finish()
}

/// `doctor` as metrics: each check's result and the number failed.
pub fn doctor(r: &doctor::Report) -> String {
    let mut t = Text(String::new());
    t.family(
        "drgit_doctor_check",
        None,
        "One doctor check: 0 ok, 1 warning, 2 failed.",
    );
    for c in &r.checks {
        let v = match c.status {
            doctor::Status::Ok => 0.0,
            doctor::Status::Warn => 1.0,
            doctor::Status::Fail => 2.0,
        };
        t.sample(
            "drgit_doctor_check",
            &[("area", c.area), ("check", &c.name)],
            v,
        );
    }
    t.family("drgit_doctor_failed_checks", None, "Doctor checks failed.");
    t.sample("drgit_doctor_failed_checks", &[], r.fail as f64);
    t.finish()
}

/// Drill results: when each kind was last drilled, whether it succeeded,
/// and its measured recovery time.
pub fn drills(reports: &[crate::scenario::drill::DrillReport], now: Timestamp) -> String {
    let mut t = Text(String::new());
    let families: [(&str, Option<&str>, &str); 5] = [
        (
            "drgit_drill_timestamp_seconds",
            Some("seconds"),
            "When the drill ran.",
        ),
        (
            "drgit_drill_success",
            None,
            "1 when the backup restored and its checks passed.",
        ),
        (
            "drgit_drill_rto_seconds",
            Some("seconds"),
            "The whole drill: the measured time to recover.",
        ),
        (
            "drgit_drill_restore_seconds",
            Some("seconds"),
            "Time to restore the base backup or snapshot.",
        ),
        (
            "drgit_drill_replay_seconds",
            Some("seconds"),
            "Time from start to promotion (WAL replay) or to answering.",
        ),
    ];
    for (name, unit, help) in families {
        t.family(name, unit, help);
        for r in reports {
            let v = match name {
                "drgit_drill_timestamp_seconds" => seconds(now),
                "drgit_drill_success" => {
                    if r.ok() {
                        1.0
                    } else {
                        0.0
                    }
                }
                "drgit_drill_rto_seconds" => r.total_secs,
                "drgit_drill_restore_seconds" => r.restore_secs,
                _ => r.replay_secs,
            };
            t.sample(name, &[("kind", &r.kind), ("mode", &r.mode)], v);
        }
    }
    t.finish()
}

/// Why the metrics could not be pushed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "--push-to {url}: only an http:// Pushgateway address is supported (the in-cluster Service, e.g. http://pushgateway.monitoring:9091)"
    )]
    Scheme { url: String },
    #[error("--push-to {url}: {detail}")]
    Failed { url: String, detail: String },
}

/// PUTs `text` to a Pushgateway as job `job` (`PUT /metrics/job/<job>`,
/// which replaces the group's metrics: github.com/prometheus/pushgateway
/// README, "PUT method"). The Pushgateway reads the Prometheus text format;
/// the OpenMetrics-only lines (`# UNIT`, `# EOF`) are comments there.
pub fn push(url: &str, job: &str, text: &str) -> Result<(), PushError> {
    use std::io::{Read, Write};
    let fail = |detail: String| PushError::Failed {
        url: url.to_string(),
        detail,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| PushError::Scheme {
            url: url.to_string(),
        })?;
    if rest.split('/').next().is_some_and(|h| h.contains('@')) {
        return Err(PushError::Failed {
            url: "the address given".into(),
            detail: "credentials in the URL are not supported (and not echoed)".into(),
        });
    }
    let (host, base) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let base = base.trim_end_matches('/');
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let timeout = Some(std::time::Duration::from_secs(30));
    let target = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail(format!("{host} has no address")))?;
    let mut s = std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(10))
        .map_err(|e| fail(e.to_string()))?;
    s.set_read_timeout(timeout)
        .map_err(|e| fail(e.to_string()))?;
    s.set_write_timeout(timeout)
        .map_err(|e| fail(e.to_string()))?;
    let body = text.as_bytes();
    let head = format!(
        "PUT {base}/metrics/job/{job} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| fail(e.to_string()))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| fail(e.to_string()))?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(0);
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(fail(format!(
            "the Pushgateway answered {}",
            answer.lines().next().unwrap_or("nothing")
        )))
    }
}
