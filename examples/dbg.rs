use drgit::manifest::{cnpg, yaml, edit::{DocEditor}};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let name = std::env::args().nth(2).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let stream = yaml::parse(&text).unwrap();
    let doc = cnpg::find_cluster(&stream, &name).unwrap();
    let c = cnpg::inspect(&stream, doc).unwrap();
    let spec = cnpg::RecoverySpec { source: "drgit-backup", target_time: Some("2026-11-24T09:00:00Z"), new_server_name: "x-2" };
    let _ = DocEditor::new(&text, stream.clone(), doc);
    match cnpg::rewrite_for_recovery(&text, stream, &c, &spec) { Ok(r) => println!("{}", r.text), Err(e) => println!("ERR {e}") }
}
