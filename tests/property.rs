//! For any comment and white-space decoration of the fixture manifest, a
//! recovery rewrite removes only lines of `spec.bootstrap.initdb` and keeps
//! every other line byte for byte, in order; the result reads back as the
//! intended recovery.

use drgit::manifest::cnpg::{self, Bootstrap, RecoverySpec};
use drgit::manifest::yaml;
use proptest::prelude::*;

const FIXTURE: &str = include_str!("../fixtures/home-cluster/manifests/database/shared-pg.yaml");

const TEXTS: &[&str] = &[
    "note",
    "復旧手順はここ",
    "TODO: — check",
    "a: b",
    "- item",
    "#",
    "\"quoted\" 'x'",
];

/// One decoration after a line: nothing, a blank line, a comment line at
/// some indent, trailing spaces, or an end-of-line comment.
#[derive(Debug, Clone)]
enum Deco {
    None,
    Blank,
    Comment(usize, usize),
    Trailing(usize),
    EolComment(usize),
}

fn deco() -> impl Strategy<Value = Deco> {
    prop_oneof![
        4 => Just(Deco::None),
        1 => Just(Deco::Blank),
        1 => (0usize..9, 0..TEXTS.len()).prop_map(|(i, t)| Deco::Comment(i, t)),
        1 => (1usize..4).prop_map(Deco::Trailing),
        1 => (0..TEXTS.len()).prop_map(Deco::EolComment),
    ]
}

/// Decorates the fixture; returns the text and, per output line, whether it
/// lies inside the `initdb` block (from its key to its last content line).
fn decorate(decos: &[Deco], crlf: bool) -> (String, Vec<bool>) {
    let mut out = Vec::new();
    let mut inside = Vec::new();
    let mut in_initdb = false;
    for (i, line) in FIXTURE.lines().enumerate() {
        let content = !line.trim().is_empty() && !line.trim_start().starts_with('#');
        let indent = line.len() - line.trim_start().len();
        if line.trim_start() == "initdb:" {
            in_initdb = true;
        } else if in_initdb && content && indent <= 4 {
            in_initdb = false;
        }
        let d = decos.get(i).cloned().unwrap_or(Deco::None);
        let mut l = line.to_string();
        match d {
            Deco::Trailing(n) if content => l.push_str(&" ".repeat(n)),
            Deco::EolComment(t) if content => l.push_str(&format!("  # {}", TEXTS[t])),
            _ => {}
        }
        out.push(l);
        inside.push(in_initdb && content);
        match d {
            Deco::Blank => {
                out.push(String::new());
                inside.push(false);
            }
            Deco::Comment(ind, t) => {
                out.push(format!("{}# {}", " ".repeat(ind), TEXTS[t]));
                inside.push(false);
            }
            _ => {}
        }
    }
    let nl = if crlf { "\r\n" } else { "\n" };
    (out.join(nl) + nl, inside)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn lines_outside_the_edit_survive(decos in proptest::collection::vec(deco(), 80), crlf in any::<bool>()) {
        let (text, inside) = decorate(&decos, crlf);
        let stream = yaml::parse(&text).expect("decorated fixture parses");
        let doc = cnpg::find_cluster(&stream, "shared-pg").unwrap();
        let cluster = cnpg::inspect(&stream, doc).unwrap();
        let spec = RecoverySpec { source: "shared-pg-backup", target_time: Some("2026-11-26 03:02:38.000000+00"), backup_id: Some("20261126T030232"), new_server_name: "shared-pg-2" };
        let rewrite = cnpg::rewrite_for_recovery(&text, stream, &cluster, &spec).expect("rewrite verifies");

        // Everything before the initdb block is a prefix of the result, and
        // every line after it is still there, byte for byte, in order.
        let old_lines: Vec<&str> = text.split_inclusive('\n').collect();
        let first = inside.iter().position(|b| *b).unwrap();
        let last = inside.iter().rposition(|b| *b).unwrap();
        let prefix: String = old_lines[..first].concat();
        prop_assert!(rewrite.text.starts_with(&prefix));
        let new_lines: Vec<&str> = rewrite.text[prefix.len()..].split_inclusive('\n').collect();
        let mut at = 0;
        for (i, line) in old_lines.iter().enumerate().skip(last + 1) {
            match new_lines[at..].iter().position(|l| l == line) {
                Some(p) => at += p + 1,
                None => prop_assert!(false, "line {} lost: {:?}", i + 1, line),
            }
        }
        // And the result is the intended recovery.
        let new_stream = yaml::parse(&rewrite.text).unwrap();
        let after = cnpg::inspect(&new_stream, cnpg::find_cluster(&new_stream, "shared-pg").unwrap()).unwrap();
        prop_assert_eq!(after.bootstrap, Bootstrap::Recovery { source: "shared-pg-backup".into(), target_time: Some("2026-11-26 03:02:38.000000+00".into()), backup_id: Some("20261126T030232".into()) });
        prop_assert_eq!(after.server_name, "shared-pg-2");
        prop_assert_eq!(rewrite.text.contains("\r\n"), crlf);
    }
}
