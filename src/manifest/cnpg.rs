//! The CloudNativePG `Cluster` fields that recovery changes.
//!
//! Reads where a Cluster backs up (the in-tree `spec.backup.barmanObjectStore`
//! or the barman-cloud plugin), how it bootstraps, and rewrites it:
//! `initdb` to `recovery` with an external cluster on the old backup
//! lineage and its own backups moved to a new lineage, and back again.

use super::ManifestError;
use super::edit::{DocEditor, Out, Seg, path_string, value_at};
use super::yaml::{self, Node, NodeKind, Resolver, Stream, Value};

/// The barman-cloud plugin's name (CNPG-I).
pub const BARMAN_PLUGIN: &str = "barman-cloud.cloudnative-pg.io";

/// Where a Cluster writes its backups.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupKind {
    /// `spec.backup.barmanObjectStore`; the value is the resolved store.
    InTree { store: Value },
    /// `spec.plugins[index]` is the barman-cloud plugin.
    Plugin { index: usize, object_name: String },
}

/// How the Cluster bootstraps.
#[derive(Debug, Clone, PartialEq)]
pub enum Bootstrap {
    Initdb,
    /// No bootstrap method written (`bootstrap` absent, `null` or `{}`):
    /// CNPG then runs `initdb` with its defaults.
    Default,
    Recovery {
        source: String,
        target_time: Option<String>,
        /// `recoveryTarget.backupID`: the base backup the recovery starts from.
        backup_id: Option<String>,
    },
}

/// What drgit needs to know about one Cluster document.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub doc: usize,
    pub name: String,
    pub bootstrap: Bootstrap,
    pub backup: BackupKind,
    /// The serverName the Cluster archives under now (its lineage).
    pub server_name: String,
    /// For a Cluster already in recovery: the serverName it recovers from.
    pub source_server_name: Option<String>,
    pub destination_path: Option<String>,
    /// Where the recovery reads the backups from: the external cluster's
    /// store for a Cluster already in recovery, else the Cluster's own.
    pub recovery_store: StoreRef,
}

/// A barman object store as a manifest names it.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreRef {
    /// `barmanObjectStore.destinationPath` (in-tree), with its field path.
    Path { path: String, field: String },
    /// The barman-cloud plugin's `barmanObjectName`: an `ObjectStore`
    /// (barmancloud.cnpg.io/v1) whose `spec.configuration.destinationPath` says.
    ObjectStore { name: String, field: String },
    /// The manifest does not say (an external cluster without a store).
    Unknown,
}

impl Cluster {
    /// The lineage whose catalog a recovery reads.
    pub fn recovery_lineage(&self) -> &str {
        self.source_server_name
            .as_deref()
            .unwrap_or(&self.server_name)
    }
}

/// Finds the one CNPG Cluster document named `name`.
pub fn find_cluster(stream: &Stream, name: &str) -> Result<usize, ManifestError> {
    let mut matches = Vec::new();
    let mut others = Vec::new();
    for (i, doc) in stream.docs.iter().enumerate() {
        let v = Resolver::document(doc);
        let is_cluster = v.get("kind").and_then(Value::as_str) == Some("Cluster")
            && v.get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|a| a.starts_with("postgresql.cnpg.io/"));
        if !is_cluster {
            continue;
        }
        let n = v
            .path(&["metadata", "name"])
            .and_then(Value::as_str)
            .unwrap_or("");
        if n == name {
            matches.push(i);
        } else {
            others.push(n.to_string());
        }
    }
    match matches.len() {
        1 => Ok(matches[0]),
        0 => Err(ManifestError::NoCluster {
            name: name.to_string(),
            found: if others.is_empty() {
                String::new()
            } else {
                format!(" (found: {})", others.join(", "))
            },
        }),
        count => Err(ManifestError::DuplicateCluster {
            name: name.to_string(),
            count,
            docs: matches
                .iter()
                .map(|i| (i + 1).to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Reads the recovery-relevant shape of the Cluster in document `doc`.
pub fn inspect(stream: &Stream, doc: usize) -> Result<Cluster, ManifestError> {
    let v = Resolver::document(&stream.docs[doc]);
    let name = v
        .path(&["metadata", "name"])
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let spec = v.get("spec").ok_or(ManifestError::NoSpec)?;

    let boot = spec.get("bootstrap");
    // `initdb: null` beside `recovery` is a Kustomize patch deleting the
    // base's initdb: it does not count as a method.
    let recovering = boot.and_then(|b| b.get("recovery")).is_some();
    let initdb = boot
        .and_then(|b| b.get("initdb"))
        .is_some_and(|v| !(recovering && *v == Value::Null));
    let recovery = boot.and_then(|b| b.get("recovery"));
    let bootstrap = match (initdb, recovery) {
        (true, Some(_)) => {
            return Err(ManifestError::TwoBootstraps);
        }
        (true, None) => Bootstrap::Initdb,
        (false, Some(r)) => {
            let source = r
                .get("source")
                .and_then(Value::as_str)
                .ok_or(ManifestError::RecoveryWithoutSource)?;
            Bootstrap::Recovery {
                source: source.to_string(),
                target_time: r
                    .path(&["recoveryTarget", "targetTime"])
                    .and_then(Value::as_str)
                    .map(str::to_string),
                backup_id: r
                    .path(&["recoveryTarget", "backupID"])
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }
        }
        (false, None) if is_empty_bootstrap(boot) => Bootstrap::Default,
        (false, None) => {
            let found = match boot {
                None | Some(Value::Null) => "no `spec.bootstrap`".to_string(),
                Some(Value::Map(m)) if m.is_empty() => "`spec.bootstrap: {}`".to_string(),
                Some(Value::Map(m)) => format!(
                    "`spec.bootstrap` with {}",
                    m.iter()
                        .map(|(k, _)| k.describe())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some(other) => format!("`spec.bootstrap: {}`", other.describe()),
            };
            return Err(ManifestError::NoBootstrapMethod { found });
        }
    };

    let in_tree = spec.path(&["backup", "barmanObjectStore"]).cloned();
    let plugin = spec
        .get("plugins")
        .and_then(Value::as_seq)
        .and_then(|items| {
            items
                .iter()
                .position(|p| p.get("name").and_then(Value::as_str) == Some(BARMAN_PLUGIN))
                .map(|i| (i, items[i].clone()))
        });
    let (backup, server_name, destination_path) = match (in_tree, plugin) {
        (Some(_), Some(_)) => {
            return Err(ManifestError::TwoBackupMethods);
        }
        (Some(store), None) => {
            let sn = store
                .get("serverName")
                .and_then(Value::as_str)
                .unwrap_or(&name)
                .to_string();
            let dest = store
                .get("destinationPath")
                .and_then(Value::as_str)
                .map(str::to_string);
            (BackupKind::InTree { store }, sn, dest)
        }
        (None, Some((index, p))) => {
            let object_name = p
                .path(&["parameters", "barmanObjectName"])
                .and_then(Value::as_str)
                .ok_or(ManifestError::NoObjectName { index })?
                .to_string();
            let sn = p
                .path(&["parameters", "serverName"])
                .and_then(Value::as_str)
                .unwrap_or(&name)
                .to_string();
            (BackupKind::Plugin { index, object_name }, sn, None)
        }
        (None, None) => {
            return Err(ManifestError::NoObjectStoreBackup);
        }
    };

    let own_store = match &backup {
        BackupKind::InTree { .. } => match &destination_path {
            Some(p) => StoreRef::Path {
                path: p.clone(),
                field: "spec.backup.barmanObjectStore.destinationPath".into(),
            },
            None => StoreRef::Unknown,
        },
        BackupKind::Plugin { index, object_name } => StoreRef::ObjectStore {
            name: object_name.clone(),
            field: format!("spec.plugins[{index}].parameters.barmanObjectName"),
        },
    };
    let mut recovery_store = own_store;
    let source_server_name = match &bootstrap {
        Bootstrap::Recovery { source, .. } => {
            let ext = external_clusters(spec)
                .iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(source.as_str()))
                .ok_or_else(|| ManifestError::NoExternalCluster {
                    source_name: source.clone(),
                })?;
            // Defaults differ by form: the barman-cloud plugin recovers
            // from the Cluster's own name (plugin-barman-cloud v0.14.0
            // internal/cnpgi/operator/config/config.go:
            // `recoveryServerName = cluster.Name`), the in-tree store from
            // the external cluster's name (cloudnative-pg v1.30.0
            // api/v1/cluster_funcs.go `GetServerName`).
            let sn = match ext.get("plugin") {
                Some(plugin) => plugin
                    .path(&["parameters", "serverName"])
                    .and_then(Value::as_str)
                    .unwrap_or(&name),
                None => ext
                    .path(&["barmanObjectStore", "serverName"])
                    .and_then(Value::as_str)
                    .unwrap_or(source),
            };
            recovery_store = if let Some(p) = ext
                .path(&["barmanObjectStore", "destinationPath"])
                .and_then(Value::as_str)
            {
                StoreRef::Path {
                    path: p.to_string(),
                    field: format!(
                        "spec.externalClusters[{source}].barmanObjectStore.destinationPath"
                    ),
                }
            } else if let Some(n) = ext
                .path(&["plugin", "parameters", "barmanObjectName"])
                .and_then(Value::as_str)
            {
                StoreRef::ObjectStore {
                    name: n.to_string(),
                    field: format!(
                        "spec.externalClusters[{source}].plugin.parameters.barmanObjectName"
                    ),
                }
            } else {
                StoreRef::Unknown
            };
            Some(sn.to_string())
        }
        Bootstrap::Initdb | Bootstrap::Default => None,
    };

    Ok(Cluster {
        doc,
        name,
        bootstrap,
        backup,
        server_name,
        source_server_name,
        destination_path,
        recovery_store,
    })
}

/// The `spec.configuration.destinationPath` of the barman-cloud plugin's
/// `ObjectStore` named `name` in a manifest text, when it holds one.
pub fn object_store_destination(text: &str, name: &str) -> Option<String> {
    let stream = yaml::parse(text).ok()?;
    stream.docs.iter().find_map(|doc| {
        let v = Resolver::document(doc);
        let is_store = v.get("kind").and_then(Value::as_str) == Some("ObjectStore")
            && v.get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|a| a.starts_with("barmancloud.cnpg.io/"))
            && v.path(&["metadata", "name"]).and_then(Value::as_str) == Some(name);
        is_store
            .then(|| {
                v.path(&["spec", "configuration", "destinationPath"])
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .flatten()
    })
}

/// `bootstrap` absent, `null` or `{}`.
fn is_empty_bootstrap(boot: Option<&Value>) -> bool {
    match boot {
        None | Some(Value::Null) => true,
        Some(Value::Map(m)) => m.is_empty(),
        _ => false,
    }
}

fn external_clusters(spec: &Value) -> &[Value] {
    spec.get("externalClusters")
        .and_then(Value::as_seq)
        .unwrap_or_default()
}

/// The next lineage name: `shared-pg` → `shared-pg-2`, `pg-v7` → `pg-v8`,
/// `db-3` → `db-4`.
pub fn next_server_name(current: &str) -> String {
    let digits = current.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (stem, num) = current.split_at(current.len() - digits);
    match num.parse::<u64>() {
        Ok(n)
            if digits > 0
                && (stem.ends_with('-') || stem.ends_with("-v") || stem.ends_with('v')) =>
        {
            format!("{stem}{:0width$}", n + 1, width = digits)
        }
        _ => format!("{current}-2"),
    }
}

/// What a recovery edit should do.
#[derive(Debug, Clone)]
pub struct RecoverySpec<'a> {
    /// Name for the external cluster that reads the old lineage.
    pub source: &'a str,
    /// In PostgreSQL's own form with an explicit offset
    /// (`2026-11-24 09:00:00.000000+00`, see [`crate::timearg::postgres`]),
    /// or None for the end of the WAL.
    pub target_time: Option<&'a str>,
    /// The base backup drgit checked the WAL chain of. CNPG otherwise picks
    /// the newest finished backup before the target by itself
    /// (barman-cloud pkg/catalog/catalog.go `FindBackupInfo`: a backupID,
    /// when given, always wins).
    pub backup_id: Option<&'a str>,
    /// The lineage the recovered Cluster archives under.
    pub new_server_name: &'a str,
}

/// `recoveryTarget` as drgit writes it: the pinned backup, then the time.
fn recovery_target(spec: &RecoverySpec, keep: Vec<(String, Value)>) -> Option<Out> {
    let mut entries: Vec<(String, Out)> = keep
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "backupID" | "targetTime"))
        .map(|(k, v)| (k, Out::from_value(&v)))
        .collect();
    let mut ours = Vec::new();
    if let Some(id) = spec.backup_id {
        ours.push(("backupID".to_string(), Out::str(id)));
    }
    if let Some(t) = spec.target_time {
        ours.push(("targetTime".to_string(), Out::str(t)));
    }
    ours.append(&mut entries);
    (!ours.is_empty()).then_some(Out::Map(ours))
}

/// The result of a manifest rewrite.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub text: String,
    /// One line per change, for plans and PR bodies.
    pub changes: Vec<String>,
}

/// Rewrites a Cluster for recovery. A Cluster already in recovery only gets
/// its target changed.
pub fn rewrite_for_recovery(
    text: &str,
    stream: Stream,
    cluster: &Cluster,
    spec: &RecoverySpec,
) -> Result<Rewrite, ManifestError> {
    let mut ed = DocEditor::new(text, stream, cluster.doc);
    let mut changes = Vec::new();
    let specp = [Seg::key("spec")];
    let boot = [Seg::key("spec"), Seg::key("bootstrap")];
    match &cluster.bootstrap {
        Bootstrap::Recovery {
            target_time,
            backup_id,
            ..
        } => {
            let rec = [
                Seg::key("spec"),
                Seg::key("bootstrap"),
                Seg::key("recovery"),
            ];
            retarget(
                &mut ed,
                &rec,
                (target_time.as_deref(), backup_id.as_deref()),
                spec,
                &mut changes,
            )?;
            if cluster.server_name != spec.new_server_name {
                let old = &cluster.server_name;
                move_lineage(&mut ed, cluster, spec.new_server_name)?;
                changes.push(format!(
                    "{}: `{old}` → `{}` (`{old}` holds objects already; CNPG refuses to archive into a non-empty lineage)",
                    lineage_path(cluster),
                    spec.new_server_name
                ));
            }
        }
        Bootstrap::Initdb | Bootstrap::Default => {
            let mut recovery = vec![("source".to_string(), Out::str(spec.source))];
            let initdb_path = [Seg::key("spec"), Seg::key("bootstrap"), Seg::key("initdb")];
            let initdb = value_at(&ed.value(), &initdb_path).cloned();
            for key in RECOVERY_KEEPS {
                if let Some(v) = initdb.as_ref().and_then(|i| i.get(key)) {
                    recovery.push((key.to_string(), Out::from_value(v)));
                }
            }
            let target = recovery_target(spec, Vec::new());
            if let Some(t) = target.clone() {
                recovery.push(("recoveryTarget".to_string(), t));
            }
            let recovery = Out::Map(recovery);
            if cluster.bootstrap == Bootstrap::Initdb {
                if !initdb_in_place(&mut ed, &initdb_path, spec.source, target)? {
                    ed.replace_entry(&boot, "initdb", "recovery", recovery)?;
                }
            } else if ed
                .root()
                .entry("spec")
                .and_then(|s| s.value.entry("bootstrap"))
                .is_some()
            {
                ed.replace_value(
                    &specp,
                    "bootstrap",
                    Out::Map(vec![("recovery".into(), recovery)]),
                )?;
            } else {
                ed.insert_entry(
                    &specp,
                    "bootstrap",
                    Out::Map(vec![("recovery".into(), recovery)]),
                )?;
            }
            changes.push(format!(
                "spec.bootstrap: {} → recovery from `{}`{}",
                if cluster.bootstrap == Bootstrap::Initdb {
                    "initdb"
                } else {
                    "CNPG's default (initdb)"
                },
                spec.source,
                spec.target_time
                    .map(|t| format!(" to {t}"))
                    .unwrap_or_else(|| " to the end of the archived WAL".into())
                    + &spec
                        .backup_id
                        .map(|b| format!(", from base backup {b}"))
                        .unwrap_or_default()
            ));

            let old = &cluster.server_name;
            let entry = match &cluster.backup {
                BackupKind::InTree { store } => {
                    // Reading needs where and how to connect, and the two
                    // WAL settings restore uses (`wal.maxParallel`,
                    // `wal.restoreAdditionalCommandArgs`); the rest of
                    // `wal`, `data` and the tags only matter for writing.
                    let mut store = store.clone();
                    let wal = store.get("wal").cloned();
                    for k in ["wal", "data", "tags", "historyTags"] {
                        store.remove(k);
                    }
                    let mut restore_wal = Value::Map(Vec::new());
                    for k in ["maxParallel", "restoreAdditionalCommandArgs"] {
                        if let Some(v) = wal.as_ref().and_then(|w| w.get(k)) {
                            restore_wal.set(k, v.clone());
                        }
                    }
                    if restore_wal != Value::Map(Vec::new()) {
                        store.set("wal", restore_wal);
                    }
                    store.set("serverName", Value::Str(old.clone()));
                    Out::map(vec![
                        ("name", Out::str(spec.source)),
                        ("barmanObjectStore", Out::from_value(&store)),
                    ])
                }
                BackupKind::Plugin { object_name, .. } => Out::map(vec![
                    ("name", Out::str(spec.source)),
                    (
                        "plugin",
                        Out::map(vec![
                            ("name", Out::str(BARMAN_PLUGIN)),
                            (
                                "parameters",
                                Out::map(vec![
                                    ("barmanObjectName", Out::str(object_name)),
                                    ("serverName", Out::str(old)),
                                ]),
                            ),
                        ]),
                    ),
                ]),
            };
            let existing = value_at(
                &ed.value(),
                &[Seg::key("spec"), Seg::key("externalClusters")],
            )
            .and_then(Value::as_seq)
            .and_then(|items| {
                items
                    .iter()
                    .position(|e| e.get("name").and_then(Value::as_str) == Some(spec.source))
            });
            let ext = [Seg::key("spec"), Seg::key("externalClusters")];
            match existing {
                Some(i) => ed.replace_item(&ext, i, entry)?,
                None => ed.append_item(&specp, "externalClusters", entry)?,
            }
            changes.push(format!(
                "spec.externalClusters: `{}` reads the backups of lineage `{old}`",
                spec.source
            ));

            move_lineage(&mut ed, cluster, spec.new_server_name)?;
            changes.push(format!(
                "{}: `{old}` → `{}` (the recovered Cluster archives under a new lineage; CNPG refuses to archive into a non-empty one)",
                lineage_path(cluster),
                spec.new_server_name
            ));
        }
    }
    Ok(Rewrite {
        text: ed.finish()?,
        changes,
    })
}

/// What `initdb` and `recovery` share (CNPG's BootstrapRecovery has
/// `database`, `owner`, `secret`, applied after promotion): the
/// application's database and role stay as initdb made them.
const RECOVERY_KEEPS: [&str; 3] = ["database", "owner", "secret"];

/// Turns a block `initdb:` mapping into `recovery:` where it stands: the
/// key renamed, what recovery does not take removed (with the comments
/// above it), `source` and `recoveryTarget` added after the kept keys. The
/// kept keys, and the comments on them, stay byte for byte. False (nothing
/// done) for a shape this cannot keep: flow style, an alias or merge key,
/// or nothing kept.
fn initdb_in_place(
    ed: &mut DocEditor,
    path: &[Seg],
    source: &str,
    target: Option<Out>,
) -> Result<bool, ManifestError> {
    let Some(node) = ed.locate(path)? else {
        return Ok(false);
    };
    let Some(entries) = node.entries().filter(|_| !node.flow) else {
        return Ok(false);
    };
    let keys: Vec<String> = entries
        .iter()
        .map(|e| e.key.scalar().unwrap_or_default().to_string())
        .collect();
    let last_kept = keys
        .iter()
        .rev()
        .find(|k| RECOVERY_KEEPS.contains(&k.as_str()))
        .cloned();
    let parent = &path[..path.len() - 1];
    let Some(last_kept) = last_kept
        .filter(|_| !keys.iter().any(|k| k == "<<" || k.is_empty()))
        .filter(|_| ed.key_is_plain(parent, "initdb"))
    else {
        return Ok(false);
    };
    for key in keys
        .iter()
        .filter(|k| !RECOVERY_KEEPS.contains(&k.as_str()))
    {
        ed.remove_entry_and_comments(path, key)?;
    }
    ed.insert_entry_after(path, &last_kept, "source", Out::str(source))?;
    if let Some(t) = target {
        ed.insert_entry_after(path, &last_kept, "recoveryTarget", t)?;
    }
    ed.rename_key(parent, "initdb", "recovery")?;
    Ok(true)
}

/// The dotted path of the Cluster's own serverName.
fn lineage_path(cluster: &Cluster) -> String {
    match cluster.backup {
        BackupKind::InTree { .. } => "spec.backup.barmanObjectStore.serverName".to_string(),
        BackupKind::Plugin { index, .. } => format!("spec.plugins[{index}].parameters.serverName"),
    }
}

/// Changes only the recovery target (time and pinned backup) of a Cluster
/// already in recovery. A time written in another form (RFC 3339 with `Z`,
/// which PostgreSQL refuses) counts as a change even when it is the same
/// instant.
fn retarget(
    ed: &mut DocEditor,
    rec: &[Seg],
    (old_time, old_backup): (Option<&str>, Option<&str>),
    spec: &RecoverySpec,
    changes: &mut Vec<String>,
) -> Result<(), ManifestError> {
    let target_path: Vec<Seg> = rec
        .iter()
        .cloned()
        .chain([Seg::key("recoveryTarget")])
        .collect();
    if old_time == spec.target_time && old_backup == spec.backup_id {
        return Err(ManifestError::NothingToChange {
            target: spec
                .target_time
                .unwrap_or("the end of the archived WAL")
                .to_string(),
        });
    }
    let target = value_at(&ed.value(), &target_path).cloned();
    let keep: Vec<(String, Value)> = match &target {
        // Other target kinds (targetXID, targetLSN, …) go: one target only.
        Some(Value::Map(m)) => m
            .iter()
            .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v.clone())))
            .filter(|(k, _)| matches!(k.as_str(), "targetTLI" | "exclusive"))
            .collect(),
        _ => Vec::new(),
    };
    match (recovery_target(spec, keep), target) {
        (Some(out), Some(_)) => ed.replace_value(rec, "recoveryTarget", out)?,
        (Some(out), None) => ed.insert_entry(rec, "recoveryTarget", out)?,
        (None, Some(_)) => ed.remove_entry(rec, "recoveryTarget")?,
        (None, None) => {}
    }
    changes.push(format!(
        "{}.recoveryTarget: {} → {}",
        path_string(rec),
        describe_target(old_time, old_backup),
        describe_target(spec.target_time, spec.backup_id)
    ));
    Ok(())
}

fn describe_target(time: Option<&str>, backup: Option<&str>) -> String {
    format!(
        "{}{}",
        time.unwrap_or("(end of WAL)"),
        backup
            .map(|b| format!(" from base backup {b}"))
            .unwrap_or_default()
    )
}

/// Points the Cluster's own backups at a new serverName.
fn move_lineage(ed: &mut DocEditor, cluster: &Cluster, new: &str) -> Result<(), ManifestError> {
    let (parent, key): (Vec<Seg>, &str) = match &cluster.backup {
        BackupKind::InTree { .. } => (
            vec![Seg::key("spec"), Seg::key("backup")],
            "barmanObjectStore",
        ),
        BackupKind::Plugin { index, .. } => (
            vec![Seg::key("spec"), Seg::key("plugins"), Seg::Index(*index)],
            "parameters",
        ),
    };
    let store_path: Vec<Seg> = parent.iter().cloned().chain([Seg::key(key)]).collect();
    let node = ed
        .locate(&store_path)?
        .ok_or_else(|| ManifestError::Shape {
            path: path_string(&store_path),
            expected: "a mapping".into(),
        })?;
    if let NodeKind::Alias { name, .. } = &node.kind {
        // `barmanObjectStore: *barman`: keep the shared mapping, override one key.
        let aliased = value_at(&ed.value(), &store_path)
            .cloned()
            .unwrap_or(Value::Null);
        let name = name.clone();
        ed.replace_value(
            &parent,
            key,
            Out::map(vec![
                (
                    "<<",
                    Out::Raw {
                        text: format!("*{name}"),
                        value: aliased,
                    },
                ),
                ("serverName", Out::str(new)),
            ]),
        )
    } else {
        ed.set_scalar(&store_path, "serverName", new)
    }
}

/// How the Cluster bootstrapped before the recovery, read from an older
/// version of the file.
#[derive(Debug, Clone)]
pub struct Origin {
    pub bootstrap: BootOrigin,
    /// The `externalClusters` entry when it was an empty sequence (`[]`),
    /// so that removing the recovery's only entry restores it as it was.
    pub empty_external_clusters: Option<RawEntry>,
}

#[derive(Debug, Clone)]
pub enum BootOrigin {
    /// `bootstrap` was a block mapping with this `initdb:` entry.
    InitdbEntry(RawEntry),
    /// The whole `bootstrap:` entry, when it was flow style, `{}` or `null`.
    BootstrapEntry(RawEntry),
    /// There was no `bootstrap` at all.
    NoBootstrap,
}

/// An entry's text from its key to the end of its last line (end-of-line
/// comment included), the column its key stood at, and its value.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub text: String,
    pub col: usize,
    pub value: Value,
}

fn raw_entry(text: &str, e: &super::yaml::Entry) -> RawEntry {
    let start = e.key.start;
    let end = e.value.end.max(e.key.end);
    let end = text[end..]
        .find('\n')
        .map(|i| end + i)
        .unwrap_or(text.len());
    let end = if end > start && text.as_bytes()[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    RawEntry {
        text: text[start..end].to_string(),
        col: text[line_start..start].chars().count(),
        value: Resolver::document(&e.value),
    }
}

/// How the Cluster bootstrapped in an older version of the file; None when
/// that version is itself in recovery (or has no such Cluster).
pub fn bootstrap_origin(text: &str, cluster_name: &str) -> Option<Origin> {
    let stream = yaml::parse(text).ok()?;
    let doc = find_cluster(&stream, cluster_name).ok()?;
    let cluster = inspect(&stream, doc).ok()?;
    let root: &Node = &stream.docs[doc];
    let spec = &root.entry("spec")?.value;
    let bootstrap = match cluster.bootstrap {
        Bootstrap::Recovery { .. } => return None,
        Bootstrap::Default if spec.entry("bootstrap").is_none() => BootOrigin::NoBootstrap,
        Bootstrap::Initdb | Bootstrap::Default => {
            let boot = spec.entry("bootstrap")?;
            if boot.value.is_alias() {
                return None;
            }
            match boot.value.entry("initdb") {
                Some(e) if !boot.value.flow => BootOrigin::InitdbEntry(raw_entry(text, e)),
                _ => BootOrigin::BootstrapEntry(raw_entry(text, boot)),
            }
        }
    };
    let empty_external_clusters = spec
        .entry("externalClusters")
        .map(|e| raw_entry(text, e))
        .filter(|raw| raw.value == Value::Seq(Vec::new()));
    Some(Origin {
        bootstrap,
        empty_external_clusters,
    })
}

/// Puts `initdb` back in place of `recovery` and removes the external
/// cluster the recovery read from. The new backup lineage stays.
pub fn rewrite_for_revert(
    text: &str,
    stream: Stream,
    cluster: &Cluster,
    origin: &Origin,
) -> Result<Rewrite, ManifestError> {
    let Bootstrap::Recovery { source, .. } = &cluster.bootstrap else {
        return Err(ManifestError::NotInRecovery);
    };
    let value = Resolver::document(&stream.docs[cluster.doc]);
    if value
        .path(&["spec", "replica", "source"])
        .and_then(Value::as_str)
        == Some(source.as_str())
    {
        return Err(ManifestError::ReplicaUsesSource {
            source_name: source.clone(),
        });
    }
    let mut ed = DocEditor::new(text, stream, cluster.doc);
    let boot = [Seg::key("spec"), Seg::key("bootstrap")];
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let fix_nl = |raw: &RawEntry| raw.text.replace("\r\n", "\n").replace('\n', nl);
    match &origin.bootstrap {
        BootOrigin::InitdbEntry(raw) => ed.replace_entry_raw(
            &boot,
            "recovery",
            &fix_nl(raw),
            raw.col,
            raw.value.clone(),
            "initdb",
        )?,
        BootOrigin::BootstrapEntry(raw) => ed.replace_entry_raw(
            &boot[..1],
            "bootstrap",
            &fix_nl(raw),
            raw.col,
            raw.value.clone(),
            "bootstrap",
        )?,
        BootOrigin::NoBootstrap => ed.remove_entry(&boot[..1], "bootstrap")?,
    }
    let mut changes =
        vec!["spec.bootstrap: recovery → initdb (as it was before the recovery)".to_string()];

    let ext = [Seg::key("spec"), Seg::key("externalClusters")];
    let items = value
        .path(&["spec", "externalClusters"])
        .and_then(Value::as_seq)
        .unwrap_or_default();
    if let Some(i) = items
        .iter()
        .position(|e| e.get("name").and_then(Value::as_str) == Some(source.as_str()))
    {
        if items.len() == 1 {
            match &origin.empty_external_clusters {
                Some(raw) => ed.replace_entry_raw(
                    &boot[..1],
                    "externalClusters",
                    &fix_nl(raw),
                    raw.col,
                    raw.value.clone(),
                    "externalClusters",
                )?,
                None => ed.remove_entry(&boot[..1], "externalClusters")?,
            }
        } else {
            ed.remove_item(&ext, i)?;
        }
        changes.push(format!(
            "spec.externalClusters: `{source}` removed (only the recovery read it)"
        ));
    }
    changes.push(format!(
        "backups stay on the new lineage `{}`",
        cluster.server_name
    ));
    Ok(Rewrite {
        text: ed.finish()?,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery_lineage_of(external: &str) -> String {
        let text = format!(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: pg\nspec:\n  instances: 1\n  bootstrap:\n    recovery:\n      source: old\n  plugins:\n    - name: barman-cloud.cloudnative-pg.io\n      isWALArchiver: true\n      parameters:\n        barmanObjectName: store\n        serverName: pg-2\n  externalClusters:\n    - name: old\n{external}"
        );
        let stream = crate::manifest::yaml::parse(&text).unwrap();
        inspect(&stream, 0).unwrap().recovery_lineage().to_string()
    }

    #[test]
    fn a_source_without_server_name_defaults_as_cnpg_does() {
        // The plugin: the Cluster's own name; in-tree: the source's name.
        assert_eq!(
            recovery_lineage_of(
                "      plugin:\n        name: barman-cloud.cloudnative-pg.io\n        parameters:\n          barmanObjectName: store\n"
            ),
            "pg"
        );
        assert_eq!(
            recovery_lineage_of(
                "      barmanObjectStore:\n        destinationPath: s3://b/cnpg/\n"
            ),
            "old"
        );
        assert_eq!(
            recovery_lineage_of(
                "      plugin:\n        name: barman-cloud.cloudnative-pg.io\n        parameters:\n          barmanObjectName: store\n          serverName: pg-1\n"
            ),
            "pg-1"
        );
    }

    /// The `bootstrap` block of `initdb` rewritten for recovery.
    fn bootstrap_after(initdb: &str) -> String {
        let text = format!(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: pg\nspec:\n  instances: 1\n  bootstrap:\n{initdb}  backup:\n    barmanObjectStore:\n      destinationPath: s3://b/cnpg/\n"
        );
        let stream = crate::manifest::yaml::parse(&text).unwrap();
        let cluster = inspect(&stream, 0).unwrap();
        let spec = RecoverySpec {
            source: "pg-backup",
            target_time: None,
            backup_id: Some("20261124T030000"),
            new_server_name: "pg-2",
        };
        let out = rewrite_for_recovery(&text, stream, &cluster, &spec).unwrap();
        let start = out.text.find("  bootstrap:\n").unwrap();
        let end = out.text.find("  backup:\n").unwrap();
        out.text[start..end].to_string()
    }

    #[test]
    fn kept_initdb_keys_keep_their_comments_and_what_recovery_lacks_goes_with_its_own() {
        assert_eq!(
            bootstrap_after(
                "    initdb: # made once\n      # The app's database.\n      database: app\n      owner: app # the role\n      # Extensions, run once after initdb.\n      postInitApplicationSQL:\n        - CREATE EXTENSION vector;\n"
            ),
            "  bootstrap:\n    recovery: # made once\n      # The app's database.\n      database: app\n      owner: app # the role\n      source: pg-backup\n      recoveryTarget:\n        backupID: \"20261124T030000\"\n"
        );
        // A comment indented under the kept key stays with it; an anchored
        // key is written anew (the anchor would be lost).
        assert_eq!(
            bootstrap_after(
                "    initdb:\n      owner: app\n        # about the owner\n      dataChecksums: true\n"
            ),
            "  bootstrap:\n    recovery:\n      owner: app\n        # about the owner\n      source: pg-backup\n      recoveryTarget:\n        backupID: \"20261124T030000\"\n"
        );
        assert_eq!(
            bootstrap_after("    &boot initdb:\n      owner: app\n"),
            "  bootstrap:\n    recovery:\n      source: pg-backup\n      owner: app\n      recoveryTarget:\n        backupID: \"20261124T030000\"\n"
        );
        // Nothing kept, or flow style: the block is written anew.
        assert_eq!(
            bootstrap_after("    initdb:\n      dataChecksums: true\n"),
            "  bootstrap:\n    recovery:\n      source: pg-backup\n      recoveryTarget:\n        backupID: \"20261124T030000\"\n"
        );
        assert_eq!(
            bootstrap_after("    initdb: {database: app, encoding: UTF8}\n"),
            "  bootstrap:\n    recovery:\n      source: pg-backup\n      database: app\n      recoveryTarget:\n        backupID: \"20261124T030000\"\n"
        );
    }

    #[test]
    fn lineage_names() {
        assert_eq!(next_server_name("shared-pg"), "shared-pg-2");
        assert_eq!(next_server_name("shared-pg-2"), "shared-pg-3");
        assert_eq!(next_server_name("postgres16-v7"), "postgres16-v8");
        assert_eq!(next_server_name("postgres16"), "postgres16-2");
        assert_eq!(next_server_name("postgres17-001"), "postgres17-002");
    }
}
