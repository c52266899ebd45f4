//! The Kanidm ConfigMap edit (`manifest::kanidm::set_partner_cert`): diffs
//! of what a user sees for both layouts and the usual decorations, and a
//! property test: for either layout and any comment and white-space
//! decoration, indentation, chomping and line ending, only the survivor's `partner_cert` value and
//! `automatic_refresh` change (plus the comment saying why), every other
//! byte stays.

use drgit::manifest::{kanidm, yaml};
use drgit::scenario::unified_diff;
use proptest::prelude::*;

const FIXTURE: &str = include_str!("../fixtures/home-cluster/manifests/kanidm/configmap-repl.yaml");
const LOST: &str = "repl://kanidm-1.kanidm:8444";
const NEW: &str = "MIIBwDCCAWegAwIBAgIUAIA8QOvzxoFgWVJrAm7_u9T512gw";

fn edit(text: &str) -> String {
    kanidm::set_partner_cert(text, yaml::parse(text).unwrap(), LOST, NEW)
        .unwrap()
        .text
}

/// The diff, with carriage returns made visible.
fn diff(text: &str) -> String {
    unified_diff("configmap-repl.yaml", text, &edit(text)).replace('\r', "␍")
}

/// Keys at 4 spaces and the TOML at 8 (from the fixture's 2 and 4).
fn four_space(text: &str) -> String {
    text.replace("\n    ", "\n        ")
        .replace("\n  ", "\n    ")
}

#[test]
fn one_toml_per_pod() {
    insta::assert_snapshot!(diff(FIXTURE));
}

#[test]
fn crlf_strip_chomping_and_four_space_indents() {
    let text = four_space(FIXTURE)
        .replace("kanidm-0.toml: |", "kanidm-0.toml: |-")
        .replace('\n', "\r\n");
    insta::assert_snapshot!(diff(&text));
}

#[test]
fn one_server_toml_keyed_by_origin_with_comments_in_japanese() {
    let text = "# レプリケーション設定\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kanidm-server-config  # 両方のポッド\ndata:\n  server.toml: |  # kanidmd の設定\n    bindaddress = \"[::]:8443\"\n    # レプリケーション: 相互プル\n    [replication]\n    origin = \"repl://kanidm-0.kanidm:8444\"\n    bindaddress = \"[::]:8444\"\n\n    [replication.\"repl://kanidm-1.kanidm:8444\"]\n    type = \"mutual-pull\"   # 双方向\n    partner_cert = \"MIIOLD\"  # 古い証明書\n    automatic_refresh = true  # 二次側のみ\n  other.txt: |\n    untouched\n";
    let out = edit(text);
    assert!(out.ends_with("  other.txt: |\n    untouched\n"));
    insta::assert_snapshot!(diff(text));
}

/// What a user writes around the settings: texts for comments.
const TEXTS: &[&str] = &[
    "note",
    "復旧手順 — ここ",
    "a = b",
    "[table]",
    "\"quoted\"",
    "#",
];

#[derive(Debug, Clone)]
enum Deco {
    None,
    /// A blank line after it.
    Blank,
    /// A comment line after it (at the line's own indent).
    Comment(usize),
    Trailing(usize),
    EolComment(usize),
}

fn deco() -> impl Strategy<Value = Deco> {
    prop_oneof![
        4 => Just(Deco::None),
        1 => Just(Deco::Blank),
        1 => (0..TEXTS.len()).prop_map(Deco::Comment),
        1 => (1usize..4).prop_map(Deco::Trailing),
        1 => (0..TEXTS.len()).prop_map(Deco::EolComment),
    ]
}

/// The fixture decorated; YAML lines get comments only where YAML allows
/// them without ending a block scalar (after top-level keys).
fn decorate(base: &str, decos: &[Deco]) -> String {
    let mut out = Vec::new();
    let lines: Vec<&str> = base.lines().collect();
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    // The indentation of the block scalar being read, if any.
    let mut scalar_at: Option<usize> = None;
    for (i, line) in lines.iter().enumerate() {
        let indent = indent_of(line);
        let header = line.trim_end().ends_with(": |") || line.trim_end().ends_with(": |-");
        if scalar_at.is_some_and(|k| indent <= k && !line.trim().is_empty()) {
            scalar_at = None;
        }
        let in_toml = scalar_at.is_some() && !line.trim().is_empty();
        let content = !line.trim().is_empty() && !line.trim_start().starts_with('#');
        let d = decos.get(i).cloned().unwrap_or(Deco::None);
        let mut l = line.to_string();
        match d {
            Deco::Trailing(n) if content && (in_toml || header) => l.push_str(&" ".repeat(n)),
            Deco::EolComment(t) if content && (in_toml || header) => {
                l.push_str(&format!("  # {}", TEXTS[t]))
            }
            _ => {}
        }
        out.push(l);
        if header {
            scalar_at = Some(indent);
        }
        let next_in_toml = scalar_at.is_some_and(|k| {
            lines
                .get(i + 1)
                .is_some_and(|n| indent_of(n) > k || n.trim().is_empty())
        });
        match d {
            Deco::Blank if in_toml && next_in_toml => out.push(String::new()),
            Deco::Comment(t) if in_toml && next_in_toml => {
                out.push(format!("{}# {}", " ".repeat(indent), TEXTS[t]))
            }
            Deco::Comment(t) if scalar_at.is_none() && indent == 0 && !line.trim().is_empty() => {
                out.push(format!("# {}", TEXTS[t]))
            }
            _ => {}
        }
    }
    out.join("\n") + "\n"
}

/// The other layout: one server.toml with a partner table keyed by origin.
const SERVER: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kanidm-server-config\ndata:\n  server.toml: |\n    bindaddress = \"[::]:8443\"\n    db_path = \"/data/kanidm.db\"\n\n    [replication]\n    origin = \"repl://kanidm-0.kanidm:8444\"\n    bindaddress = \"[::]:8444\"\n\n    [replication.\"repl://kanidm-1.kanidm:8444\"]\n    type = \"mutual-pull\"\n    partner_cert = \"MIIOLD\"\n    automatic_refresh = true\n  other.txt: |\n    untouched\n";

/// What the edit must produce: the same text, with the survivor's value
/// and switch changed in place and the comment before the switch. The
/// survivor's settings are under the data key `survivor`.
fn expected(text: &str, nl: &str, survivor: &str) -> String {
    let mut out = Vec::new();
    let mut in_survivor = false;
    let mut in_entry = false;
    for line in text.split(nl) {
        let t = line.trim_start();
        if t.starts_with(&format!("{survivor}:")) {
            in_survivor = true;
        } else if t.starts_with("kanidm-1.toml:") || t.starts_with("other.txt:") {
            in_survivor = false;
        }
        if t.starts_with('[') {
            in_entry = t.starts_with(&format!("[replication.\"{LOST}\"]"));
        }
        let indent = &line[..line.len() - t.len()];
        if in_survivor && in_entry && t.starts_with("partner_cert = \"") {
            let rest = &t["partner_cert = \"".len()..];
            let after = &rest[rest.find('"').unwrap()..];
            out.push(format!("{indent}partner_cert = \"{NEW}{after}"));
        } else if in_survivor && in_entry && t.starts_with("automatic_refresh = true") {
            out.push(format!(
                "{indent}# drgit kanidm-recert: off, or this node would wipe itself and copy the"
            ));
            out.push(format!(
                "{indent}# partner that lost its data as soon as replication resumes."
            ));
            out.push(format!(
                "{indent}automatic_refresh = false{}",
                &t["automatic_refresh = true".len()..]
            ));
        } else {
            out.push(line.to_string());
        }
    }
    out.join(nl)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn only_the_certificate_and_the_switch_change(
        decos in prop::collection::vec(deco(), 30),
        four in any::<bool>(),
        strip in any::<bool>(),
        crlf in any::<bool>(),
        server in any::<bool>(),
    ) {
        let (fixture, survivor) = if server {
            (SERVER, "server.toml")
        } else {
            (FIXTURE, "kanidm-0.toml")
        };
        let mut base = if four { four_space(fixture) } else { fixture.to_string() };
        if strip {
            base = base.replace(&format!("{survivor}: |"), &format!("{survivor}: |-"));
        }
        let mut text = decorate(&base, &decos);
        let nl = if crlf { "\r\n" } else { "\n" };
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        let stream = yaml::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let r = kanidm::set_partner_cert(&text, stream, LOST, NEW)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&r.text, &expected(&text, nl, survivor), "from:\n{}", text);
        // And it reads back as intended.
        let again = kanidm::set_partner_cert(&r.text, yaml::parse(&r.text).unwrap(), LOST, NEW);
        prop_assert!(again.is_err(), "a second edit has nothing to change");
    }
}
