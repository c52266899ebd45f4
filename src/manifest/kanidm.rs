//! Kanidm's replication settings in a ConfigMap manifest: TOML inside YAML
//! literal block scalars (`data: {kanidm-0.toml: |…}`, one key per pod, or
//! one server.toml with a partner table per origin URL).
//!
//! The TOML is edited with `toml_edit` (comments, order and spacing kept),
//! put back into its block scalar with the scalar's own indentation and line
//! endings, and the file verified as for every edit (`edit::DocEditor`).
//!
//! Kanidm's rules (server 1.9, the Kanidm book, replication): a partner is
//! `[replication."repl://host:port"]` with `type`, `partner_cert` (the
//! partner's URL-safe base64 DER certificate) and optionally
//! `automatic_refresh = true`, which makes this node wipe itself and copy
//! the partner when their domains differ. A pod that lost its data comes
//! back with a new domain: a SURVIVOR with automatic_refresh towards it
//! would copy the empty pod. So the change that gives the survivor the new
//! certificate also turns that off.

use toml_edit::{DocumentMut, Item, Value as TomlValue};

use super::ManifestError;
use super::cnpg::Rewrite;
use super::edit::{DocEditor, Seg};
use super::yaml::{NodeKind, Resolver, Stream, Value};

/// One TOML document in the ConfigMap that names the lost node as a partner.
struct Survivor {
    doc: usize,
    key: String,
    toml: String,
    parsed: DocumentMut,
}

/// Sets a TOML value in place, keeping the spaces and comment around it.
fn set_keeping_decor(v: &mut TomlValue, new: TomlValue) {
    let decor = v.decor().clone();
    *v = new;
    *v.decor_mut() = decor;
}

fn toml_entries(stream: &Stream) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (i, doc) in stream.docs.iter().enumerate() {
        let v = Resolver::document(doc);
        if v.get("kind").and_then(Value::as_str) != Some("ConfigMap") {
            continue;
        }
        let Some(data) = doc.entry("data") else {
            continue;
        };
        for e in data.value.entries().unwrap_or_default() {
            if let (NodeKind::Scalar { value: key, .. }, NodeKind::Scalar { value, .. }) =
                (&e.key.kind, &e.value.kind)
                && value.contains("[replication")
            {
                out.push((i, key.clone(), value.clone()));
            }
        }
    }
    out
}

fn parse(key: &str, text: &str) -> Result<DocumentMut, ManifestError> {
    text.parse::<DocumentMut>()
        .map_err(|e| ManifestError::Toml {
            key: key.to_string(),
            message: e.to_string().trim().to_string(),
        })
}

fn own_origin(doc: &DocumentMut) -> Option<String> {
    doc.get("replication")?
        .get("origin")?
        .as_str()
        .map(str::to_string)
}

/// The origin a pod's own settings declare (`[replication] origin`), found
/// by the pod name in the origin's host (`repl://kanidm-1.kanidm:8444`).
pub fn origin_of(stream: &Stream, pod: &str) -> Option<String> {
    toml_entries(stream).into_iter().find_map(|(_, key, text)| {
        let doc = text.parse::<DocumentMut>().ok()?;
        let origin = own_origin(&doc)?;
        let host = origin.split("://").nth(1)?.split(['.', ':']).next()?;
        (host == pod || key.trim_end_matches(".toml") == pod).then_some(origin)
    })
}

/// The certificates the other nodes' settings trust for `origin`
/// (`partner_cert` of their `[replication."<origin>"]`).
pub fn partner_certs_for(stream: &Stream, origin: &str) -> Vec<String> {
    toml_entries(stream)
        .into_iter()
        .filter_map(|(_, _, text)| {
            let doc = text.parse::<DocumentMut>().ok()?;
            doc.get("replication")?
                .get(origin)?
                .get("partner_cert")?
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Puts `cert` as the partner certificate for `lost_origin` in every other
/// node's settings, and turns `automatic_refresh` towards it off (with a
/// comment saying why). A certificate already in place (and no
/// automatic_refresh to turn off) is `ManifestError::NothingToChange`.
pub fn set_partner_cert(
    text: &str,
    stream: Stream,
    lost_origin: &str,
    cert: &str,
) -> Result<Rewrite, ManifestError> {
    edit_partner(text, stream, lost_origin, cert, true)
}

/// Puts `cert` as the partner certificate for `origin` in every other
/// node's settings and leaves `automatic_refresh` as it is: for a node that
/// did NOT lose its data (a restored one), towards which refreshing is
/// what the others should do.
pub fn set_partner_cert_keeping_refresh(
    text: &str,
    stream: Stream,
    origin: &str,
    cert: &str,
) -> Result<Rewrite, ManifestError> {
    edit_partner(text, stream, origin, cert, false)
}

fn edit_partner(
    text: &str,
    stream: Stream,
    lost_origin: &str,
    cert: &str,
    refresh_off: bool,
) -> Result<Rewrite, ManifestError> {
    let mut survivors = Vec::new();
    for (doc, key, toml) in toml_entries(&stream) {
        let parsed = parse(&key, &toml)?;
        if own_origin(&parsed).as_deref() == Some(lost_origin) {
            continue; // the lost node's own settings
        }
        let names_it = parsed
            .get("replication")
            .and_then(Item::as_table_like)
            .is_some_and(|r| r.contains_key(lost_origin));
        if names_it {
            survivors.push(Survivor {
                doc,
                key,
                toml,
                parsed,
            });
        }
    }
    if survivors.is_empty() {
        return Err(ManifestError::NoPartnerEntry {
            origin: lost_origin.to_string(),
        });
    }
    let doc = survivors[0].doc;
    if survivors.iter().any(|s| s.doc != doc) {
        return Err(ManifestError::Shape {
            path: "data".into(),
            expected: "one ConfigMap naming the partner".into(),
        });
    }
    let mut ed = DocEditor::new(text, stream, doc);
    let mut changes = Vec::new();
    for s in survivors {
        let mut toml = s.parsed;
        let inline = toml
            .get("replication")
            .and_then(|r| r.get(lost_origin))
            .is_some_and(Item::is_inline_table);
        let Some(table) = toml
            .get_mut("replication")
            .and_then(|r| r.get_mut(lost_origin))
            .and_then(Item::as_table_like_mut)
        else {
            continue;
        };
        let old_cert = table
            .get("partner_cert")
            .and_then(Item::as_str)
            .map(str::to_string);
        if old_cert.as_deref() != Some(cert) {
            match table.get_mut("partner_cert").and_then(Item::as_value_mut) {
                Some(v) => set_keeping_decor(v, TomlValue::from(cert)),
                None => {
                    table.insert("partner_cert", toml_edit::value(cert));
                }
            }
            changes.push(format!(
                "data.{}: [replication.\"{lost_origin}\"] partner_cert → the new certificate",
                s.key
            ));
        }
        if refresh_off && table.get("automatic_refresh").and_then(Item::as_bool) == Some(true) {
            if let Some(v) = table
                .get_mut("automatic_refresh")
                .and_then(Item::as_value_mut)
            {
                set_keeping_decor(v, TomlValue::from(false));
            }
            // An inline table cannot hold a comment: the value alone.
            if !inline && let Some(mut k) = table.key_mut("automatic_refresh") {
                let prefix = k
                    .leaf_decor()
                    .prefix()
                    .and_then(|p| p.as_str())
                    .unwrap_or_default()
                    .to_string();
                k.leaf_decor_mut().set_prefix(format!(
                    "{prefix}# drgit kanidm-recert: off, or this node would wipe itself and copy the\n# partner that lost its data as soon as replication resumes.\n"
                ));
            }
            changes.push(format!(
                "data.{}: [replication.\"{lost_origin}\"] automatic_refresh true → false (this node must not copy the empty partner)",
                s.key
            ));
        }
        let new = toml.to_string();
        if refresh_off {
            refresh_is_off(&new, &s.key, lost_origin, text)?;
        }
        if new != s.toml {
            ed.replace_block_scalar(&[Seg::key("data")], &s.key, &new)?;
        }
    }
    if changes.is_empty() {
        return Err(ManifestError::NothingToChange {
            target: format!("the certificate in place for {lost_origin}"),
        });
    }
    Ok(Rewrite {
        text: ed.finish()?,
        changes,
    })
}

/// The edited TOML, read again: `automatic_refresh` towards the lost node
/// must not be on (any other form than a plain `false` or none is refused,
/// naming the line of the file where it is).
fn refresh_is_off(toml: &str, key: &str, origin: &str, file: &str) -> Result<(), ManifestError> {
    let doc = parse(key, toml)?;
    let value = doc
        .get("replication")
        .and_then(|r| r.get(origin))
        .and_then(|t| t.get("automatic_refresh"));
    match value {
        None => Ok(()),
        Some(v) if v.as_bool() == Some(false) => Ok(()),
        Some(_) => {
            // The first uncommented `automatic_refresh` after the partner's
            // table header, inside this key's scalar.
            let start = file.find(&format!("{key}:")).unwrap_or(0);
            let header = file[start..]
                .find(&format!("\"{origin}\""))
                .map_or(start, |i| start + i);
            let mut at = header;
            let mut pos = header;
            for line in file[header..].split_inclusive('\n') {
                let t = line.trim_start();
                if t.starts_with("automatic_refresh")
                    || (!t.starts_with('#') && t.contains("automatic_refresh"))
                {
                    at = pos + (line.len() - t.len());
                    break;
                }
                pos += line.len();
            }
            Err(ManifestError::AutomaticRefreshOn {
                key: key.to_string(),
                origin: origin.to_string(),
                line: file[..at].matches('\n').count() + 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml;

    const FIXTURE: &str =
        include_str!("../../fixtures/home-cluster/manifests/kanidm/configmap-repl.yaml");
    const LOST: &str = "repl://kanidm-1.kanidm:8444";

    fn edit(text: &str, cert: &str) -> Result<Rewrite, ManifestError> {
        set_partner_cert(text, yaml::parse(text).unwrap(), LOST, cert)
    }

    fn changed_lines(a: &str, b: &str) -> Vec<String> {
        let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        b.iter()
            .filter(|l| !a.contains(l))
            .map(|l| l.to_string())
            .collect()
    }

    #[test]
    fn the_survivor_gets_the_certificate_and_stops_refreshing() {
        assert_eq!(
            origin_of(&yaml::parse(FIXTURE).unwrap(), "kanidm-1").as_deref(),
            Some(LOST)
        );
        let r = edit(FIXTURE, "MIINEWCERT").unwrap();
        let added = changed_lines(FIXTURE, &r.text);
        assert_eq!(
            added,
            vec![
                "    partner_cert = \"MIINEWCERT\"",
                "    # drgit kanidm-recert: off, or this node would wipe itself and copy the",
                "    # partner that lost its data as soon as replication resumes.",
                "    automatic_refresh = false",
            ]
        );
        // The lost pod's own settings (kanidm-1.toml) are untouched.
        let tail = &FIXTURE[FIXTURE.find("  kanidm-1.toml").unwrap()..];
        assert!(r.text.ends_with(tail));
        // Again: nothing to change.
        let again = edit(&r.text, "MIINEWCERT").unwrap_err();
        assert!(again.to_string().contains("nothing to change"), "{again}");
    }

    #[test]
    fn crlf_strip_chomping_and_four_space_indents_are_kept() {
        // Keys at 4 spaces, the TOML at 10.
        let text = FIXTURE
            .replace("kanidm-0.toml: |", "kanidm-0.toml: |-")
            .replace("\n    ", "\n        ")
            .replace("\n  ", "\n    ")
            .replace('\n', "\r\n");
        assert!(text.contains("\r\n    kanidm-0.toml: |-\r\n          [replication]\r\n"));
        let r = edit(&text, "MIINEWCERT").unwrap();
        assert!(
            r.text
                .contains("\r\n          partner_cert = \"MIINEWCERT\"\r\n"),
            "{:?}",
            r.text
        );
        assert!(
            !r.text.replace("\r\n", "").contains('\n'),
            "only CRLF line ends"
        );
        let v = Resolver::document(&yaml::parse(&r.text).unwrap().docs[0]);
        let toml = v
            .path(&["data", "kanidm-0.toml"])
            .and_then(Value::as_str)
            .unwrap();
        assert!(!toml.ends_with('\n'), "`|-` keeps no final line break");
    }

    #[test]
    fn one_server_toml_keyed_by_origin() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kanidm-repl\ndata:\n  server.toml: |\n    # shared by both pods\n    [replication]\n    origin = \"repl://kanidm-0.kanidm:8444\"\n\n    [replication.\"repl://kanidm-1.kanidm:8444\"]\n    type = \"mutual-pull\"  # pull both ways\n    partner_cert = \"MIIOLD\"\n";
        let r = edit(text, "MIINEWCERT").unwrap();
        assert_eq!(
            r.text,
            text.replace("MIIOLD", "MIINEWCERT"),
            "only the certificate changes"
        );
    }

    #[test]
    fn a_restored_nodes_certificate_leaves_automatic_refresh_alone() {
        // kanidm-1's entry for kanidm-0, with automatic_refresh on: the
        // secondary refreshing from the restored node is what it should do.
        let stream = yaml::parse(FIXTURE).unwrap();
        let old = &partner_certs_for(&stream, "repl://kanidm-0.kanidm:8444")[0];
        let text = FIXTURE.replace(
            &format!("{old}\""),
            "MIIOLD0\"\n    automatic_refresh = true",
        );
        let r = set_partner_cert_keeping_refresh(
            &text,
            yaml::parse(&text).unwrap(),
            "repl://kanidm-0.kanidm:8444",
            "MIINEW0",
        )
        .unwrap();
        assert_eq!(r.text, text.replace("MIIOLD0", "MIINEW0"));
    }

    #[test]
    fn no_entry_for_the_lost_node_is_an_error() {
        let e = set_partner_cert(
            FIXTURE,
            yaml::parse(FIXTURE).unwrap(),
            "repl://kanidm-9.kanidm:8444",
            "MIINEWCERT",
        )
        .unwrap_err();
        assert!(e.to_string().contains("repl://kanidm-9.kanidm:8444"), "{e}");
    }

    #[test]
    fn automatic_refresh_in_an_inline_table_is_turned_off_without_a_comment() {
        let text = "kind: ConfigMap\ndata:\n  kanidm-0.toml: |\n    [replication]\n    origin = \"repl://kanidm-0.kanidm:8444\"\n    \"repl://kanidm-1.kanidm:8444\" = { type = \"mutual-pull\", partner_cert = \"MIIOLD\", automatic_refresh = true }\n";
        let r = edit(text, "MIINEWCERT").unwrap();
        assert!(
            r.text
                .contains("partner_cert = \"MIINEWCERT\", automatic_refresh = false }"),
            "{}",
            r.text
        );
    }

    #[test]
    fn an_automatic_refresh_drgit_cannot_turn_off_is_refused_with_its_line() {
        // A string is not the bool kanidm reads; drgit does not guess.
        // A comment naming the key comes first: the line named is the key's.
        let stream = yaml::parse(FIXTURE).unwrap();
        let old = &partner_certs_for(&stream, "repl://kanidm-1.kanidm:8444")[0];
        let text = FIXTURE
            .replace("automatic_refresh = true", "automatic_refresh = \"true\"")
            .replace(
                &format!("    type = \"mutual-pull\"\n    partner_cert = \"{old}"),
                &format!("    # automatic_refresh belongs on the secondary only\n    type = \"mutual-pull\"\n    partner_cert = \"{old}"),
            );
        assert!(text.contains("# automatic_refresh belongs"));
        let e = edit(&text, "MIINEWCERT").unwrap_err();
        let line = text
            .lines()
            .position(|l| l.contains("automatic_refresh = "))
            .unwrap()
            + 1;
        assert!(
            matches!(&e, ManifestError::AutomaticRefreshOn { line: l, key, .. } if *l == line && key == "kanidm-0.toml"),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("line {line}")), "{e}");
    }
}
