//! A StatefulSet manifest's `spec.replicas` and image: read, and the
//! replica count set as one reviewed change.
//!
//! Scaling goes through Git, never `kubectl scale`: Argo CD with self-heal
//! puts a live count that differs from Git back within seconds (Argo CD
//! docs, auto_sync.md "Automatic Self-Healing").

use super::ManifestError;
use super::cnpg::Rewrite;
use super::edit::{DocEditor, Out, Seg};
use super::yaml::{Resolver, Stream, Value};

/// The StatefulSet `name` in the stream: its document, replicas (Kubernetes'
/// default 1 when absent) and its containers' images.
pub struct Found {
    pub doc: usize,
    pub replicas: i64,
    pub replicas_written: bool,
    pub images: Vec<String>,
}

pub fn find(stream: &Stream, name: &str) -> Result<Found, ManifestError> {
    for (doc, d) in stream.docs.iter().enumerate() {
        let v = Resolver::document(d);
        if v.get("kind").and_then(Value::as_str) != Some("StatefulSet")
            || v.path(&["metadata", "name"]).and_then(Value::as_str) != Some(name)
        {
            continue;
        }
        let written = v.path(&["spec", "replicas"]);
        let replicas = match written {
            None => 1,
            Some(Value::Int(n)) => *n as i64,
            Some(other) => {
                return Err(ManifestError::Shape {
                    path: "spec.replicas".into(),
                    expected: format!("a number, not {}", other.describe()),
                });
            }
        };
        let images = v
            .path(&["spec", "template", "spec", "containers"])
            .and_then(Value::as_seq)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.get("image").and_then(Value::as_str).map(str::to_string))
            .collect();
        return Ok(Found {
            doc,
            replicas,
            replicas_written: written.is_some(),
            images,
        });
    }
    Err(ManifestError::Shape {
        path: format!("StatefulSet `{name}`"),
        expected: "a StatefulSet of that name in the file".into(),
    })
}

/// Sets `spec.replicas` of StatefulSet `name` to `n`, every other byte kept.
pub fn set_replicas(
    text: &str,
    stream: Stream,
    name: &str,
    n: i64,
) -> Result<Rewrite, ManifestError> {
    let found = find(&stream, name)?;
    if found.replicas == n && found.replicas_written {
        return Err(ManifestError::NothingToChange {
            target: format!("spec.replicas of StatefulSet {name}: already {n}"),
        });
    }
    let mut ed = DocEditor::new(text, stream, found.doc);
    let out = Out::Raw {
        text: n.to_string(),
        value: Value::Int(n as i128),
    };
    let spec = [Seg::key("spec")];
    if found.replicas_written {
        ed.replace_value(&spec, "replicas", out)?;
    } else {
        ed.insert_entry(&spec, "replicas", out)?;
    }
    Ok(Rewrite {
        text: ed.finish()?,
        changes: vec![format!(
            "spec.replicas of StatefulSet {name}: {} → {n}",
            found.replicas
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml;

    const FIXTURE: &str =
        include_str!("../../fixtures/home-cluster/manifests/kanidm/statefulset.yaml");

    fn set(text: &str, n: i64) -> Result<Rewrite, ManifestError> {
        set_replicas(text, yaml::parse(text).unwrap(), "kanidm", n)
    }

    #[test]
    fn only_the_count_changes() {
        let found = find(&yaml::parse(FIXTURE).unwrap(), "kanidm").unwrap();
        assert_eq!(found.replicas, 2);
        assert_eq!(found.images, ["docker.io/kanidm/server:1.9.1"]);
        let down = set(FIXTURE, 0).unwrap();
        assert_eq!(
            down.text,
            FIXTURE.replace("  replicas: 2\n", "  replicas: 0\n")
        );
        let up = set(&down.text, 2).unwrap();
        assert_eq!(up.text, FIXTURE);
        assert!(set(FIXTURE, 2).is_err(), "already 2: nothing to change");
    }

    #[test]
    fn a_comment_and_crlf_stay_and_a_missing_count_is_added() {
        let text = FIXTURE
            .replace("  replicas: 2\n", "  replicas: 2  # two for replication\n")
            .replace('\n', "\r\n");
        let r = set(&text, 0).unwrap();
        assert!(r.text.contains("  replicas: 0  # two for replication\r\n"));
        assert_eq!(r.text.len(), text.len());
        let without = FIXTURE.replace("  replicas: 2\n", "");
        let r = set(&without, 0).unwrap();
        assert_eq!(
            find(&yaml::parse(&r.text).unwrap(), "kanidm")
                .unwrap()
                .replicas,
            0
        );
        assert_eq!(r.changes, ["spec.replicas of StatefulSet kanidm: 1 → 0"]);
    }
}
