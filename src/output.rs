//! Rendering outcomes and errors: a short human report with a coloured
//! diff on a terminal, or one JSON document with `--json`.

use std::io::{IsTerminal, Write};

use crate::scenario::{Detail, Outcome, PgRecoverDetail};

/// Whether to colour stdout: a terminal, and `NO_COLOR` unset.
pub fn use_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Colours a unified diff line by line.
pub fn colour_diff(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len() + 256);
    for line in diff.split_inclusive('\n') {
        let code = if line.starts_with("+++") || line.starts_with("---") {
            "1"
        } else if line.starts_with('+') {
            "32"
        } else if line.starts_with('-') {
            "31"
        } else if line.starts_with("@@") {
            "36"
        } else {
            ""
        };
        if code.is_empty() {
            out.push_str(line);
        } else {
            let body = line.trim_end_matches(['\n', '\r']);
            out.push_str(&format!("\x1b[{code}m{body}\x1b[0m{}", &line[body.len()..]));
        }
    }
    out
}

/// What a run will do: the subject, its own lines, the changes, the diff
/// and the plan (shown before a long run starts, and atop the report).
pub fn preview(o: &Outcome, colour: bool) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "drgit {}: {} in {}\n",
        o.scenario,
        o.detail.subject(),
        o.manifest
    ));
    match &o.detail {
        Detail::PgRecover(d) => pg_recover(&mut s, d),
        Detail::KanidmRecert(d) => {
            s.push_str(&format!("Origin:      {}\n", d.origin));
            s.push_str(&format!(
                "Certificate: {}\n             read from {}\n",
                d.certificate.describe(),
                d.certificate_from
            ));
            if d.in_place {
                s.push_str("Already in place: nothing to change.\n");
            }
        }
        Detail::KanidmRestore(d) => {
            let b = &d.backup;
            s.push_str(&format!(
                "Backup:   {} ({} bytes, {}, written by kanidmd {}{}), verified; SHA-256 {}\n",
                b.key,
                b.size,
                if b.gzip { "gzip" } else { "plain JSON" },
                b.version,
                b.db_ts_max
                    .as_ref()
                    .map(|t| format!(", newest change {t}"))
                    .unwrap_or_default(),
                b.sha256
            ));
            s.push_str(&format!(
                "Restore:  into {} (volume data-{}) as /data/{} with {}\n",
                d.pod, d.pod, b.restore_name, d.image
            ));
            s.push_str(&format!(
                "Then:     {} back to {} replica(s); {} re-certified and refreshed from {}\n",
                d.statefulset,
                d.replicas,
                d.others.join(", "),
                d.pod
            ));
        }
        Detail::EtcdRecover(d) => {
            let sn = &d.snapshot;
            s.push_str(&format!(
                "Snapshot: {} ({} bytes{}{}{}), verified\n",
                sn.source,
                sn.size,
                sn.taken
                    .as_ref()
                    .map(|t| format!(", taken {t}"))
                    .unwrap_or_default(),
                sn.stats
                    .map(|st| format!(
                        ", revision {}, {} revisions kept",
                        st.revision, st.revisions
                    ))
                    .unwrap_or_default(),
                if sn.data_dir_copy {
                    ", a data dir copy: --recover-skip-hash-check"
                } else {
                    ""
                }
            ));
            for k in &sn.skipped {
                s.push_str(&format!("Skipped:  {k}\n"));
            }
            for c in &d.checked {
                s.push_str(&format!("Checked:  {c}\n"));
            }
            for line in &d.saved {
                s.push_str(&format!("Saved:    {line}\n"));
            }
        }
        Detail::PgRevert(_) => {}
    }
    if !o.changes.is_empty() || !o.diff.is_empty() {
        s.push_str("\nChanges:\n");
        for c in &o.changes {
            s.push_str(&format!("  - {c}\n"));
        }
        s.push('\n');
        s.push_str(&if colour {
            colour_diff(&o.diff)
        } else {
            o.diff.clone()
        });
        if !o.diff.ends_with('\n') {
            s.push('\n');
        }
    }
    s.push_str("\nPlan:\n");
    for (i, p) in o.plan.iter().enumerate() {
        s.push_str(&format!("  {}. {p}\n", i + 1));
    }
    s.push('\n');
    s
}

/// The human report.
pub fn human(o: &Outcome, colour: bool) -> String {
    let mut s = preview(o, colour);
    let published = o.published.as_ref();
    match (&o.branch, &o.commit) {
        (Some(b), Some(c)) => {
            s.push_str(&format!(
                "Committed {} on branch `{b}` and switched to it",
                &c[..c.len().min(12)]
            ));
            match published.and_then(|p| p.pushed.as_ref()) {
                Some(to) => s.push_str(&format!("; pushed to {to}.\n")),
                None => s.push_str("; nothing left this machine.\n"),
            }
        }
        _ => s.push_str("Dry run: nothing was changed.\n"),
    }
    if let Some(pr) = published.and_then(|p| p.pull_request.as_ref()) {
        let verb = match pr.action {
            "created" => "Opened",
            "updated" => "Updated",
            _ => "Unchanged:",
        };
        s.push_str(&format!("{verb} pull request #{}: {}\n", pr.number, pr.url));
    }
    if let Some(m) = published.and_then(|p| p.merge_commit.as_ref()) {
        s.push_str(&format!("Merged as {m}.\n"));
    }
    if let Some(w) = &o.wait {
        s.push('\n');
        s.push_str(&journal(w));
    }
    if let Detail::KanidmRestore(d) = &o.detail {
        for l in &d.left {
            s.push_str(&format!("Left: {l}\n"));
        }
    }
    s
}

/// pg-recover's own lines: the catalog, the window, the target.
fn pg_recover(s: &mut String, d: &PgRecoverDetail) {
    let c = &d.catalog;
    s.push_str(&format!(
        "Backups:  {} (lineage `{}`): {} base backup(s), {} WAL segment(s), {}\n",
        c.location,
        c.lineage,
        c.base_backups,
        c.wal_segments,
        match c.gaps.len() {
            0 => "no gaps".to_string(),
            n => format!("{n} gap(s)"),
        }
    ));
    for w in &c.windows {
        s.push_str(&format!("Window:   {w}\n"));
    }
    s.push_str(&format!(
        "Target:   {}{}{}\n",
        d.target_time
            .as_deref()
            .unwrap_or("end of the archived WAL"),
        d.recovery_target_time
            .as_ref()
            .map(|t| format!(" (written as `{t}`)"))
            .unwrap_or_default(),
        d.base_backup
            .as_ref()
            .map(|b| format!(", from base backup {b} (pinned)"))
            .unwrap_or_default()
    ));
    if let Some(l) = &d.new_lineage {
        s.push_str(&format!(
            "Lineage:  the recovered Cluster archives as `{l}`\n"
        ));
    }
}

/// A journal of steps: one line each, with its state.
pub fn journal(v: &serde_json::Value) -> String {
    let mut s = format!(
        "{} (started {})\n",
        v["scenario"].as_str().unwrap_or("run"),
        v["started_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .map(|t| crate::timearg::Second(t).to_string())
            .unwrap_or_else(|| "?".into())
    );
    for step in v["steps"].as_array().into_iter().flatten() {
        let mark = match step["status"].as_str() {
            Some("done") => "done   ",
            Some("running") => "running",
            _ => "pending",
        };
        s.push_str(&format!(
            "  [{mark}] {}: {}\n",
            step["name"].as_str().unwrap_or("?"),
            step["description"].as_str().unwrap_or("")
        ));
        // What a finished step found worth saying (what reached the bucket).
        if let Some(note) = step["output"]["note"].as_str() {
            s.push_str(&format!("            {note}\n"));
        }
    }
    s
}

/// The line `backups download` prints.
pub fn downloaded(d: &crate::backup::download::Downloaded) -> String {
    format!(
        "Downloaded {} to {} ({} bytes{}); checked: {}{}\n",
        d.key,
        d.path.display(),
        d.size,
        if d.resumed_parts > 0 {
            format!(", resumed after {} part(s)", d.resumed_parts)
        } else {
            String::new()
        },
        d.checks.join(", "),
        d.version
            .as_ref()
            .map(|v| format!("; written by kanidmd {v}"))
            .unwrap_or_default()
    )
}

/// Prints an outcome in the requested form.
pub fn print(o: &Outcome, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, o)?;
        writeln!(out)
    } else {
        out.write_all(human(o, use_colour()).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_colours_by_line_kind() {
        let d = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\r\n+new\r\n ctx\n";
        let c = colour_diff(d);
        assert!(c.contains("\x1b[31m-old\x1b[0m\r\n"), "{c:?}");
        assert!(c.contains("\x1b[32m+new\x1b[0m\r\n"), "{c:?}");
        assert!(c.contains("\x1b[36m@@ -1 +1 @@\x1b[0m\n"), "{c:?}");
        assert!(c.contains("\n ctx\n"), "{c:?}");
        assert_eq!(strip(&c), d);
    }

    fn strip(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}
