//! Pod exec through the real kube client's websocket support, against the
//! FAKE API server speaking Kubernetes' channel protocol: stdout, stderr and
//! the exit status come back separately.

mod common;

use common::fake_cluster::{Behaviour, FakeCluster};
use drgit::cluster::Kube;

#[test]
fn exec_separates_stdout_stderr_and_exit_status() {
    let kube = FakeCluster::start(
        std::path::PathBuf::from("/nonexistent"),
        Behaviour::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let kc = kube.kubeconfig(dir.path());
    let k = Kube::connect(Some(&kc), None).unwrap();

    let out = k
        .exec(
            "kanidm",
            "kanidm-0",
            Some("kanidm"),
            &[
                "kanidmd",
                "show-replication-certificate",
                "-c",
                "/config/server.toml",
            ],
        )
        .unwrap();
    assert_eq!(
        out.stdout,
        "certificate: \"MIIBmjCCAUCgAwIBAgIBATAKBggqhkjOPQQDAjA2\"\n"
    );
    assert_eq!(out.stderr, "");
    assert!(out.success);
    assert_eq!(out.exit_code, Some(0));

    let out = k.exec("kanidm", "kanidm-0", None, &["false"]).unwrap();
    assert!(!out.success);
    assert_eq!(out.exit_code, Some(1));
    assert_eq!(out.stderr, "something went wrong\n");
    assert!(out.message.contains("exit code 1"), "{}", out.message);

    let out = k
        .exec("kanidm", "kanidm-1", None, &["echo", "a b/c"])
        .unwrap();
    assert_eq!(out.stdout, "echo a b/c\n");
    assert_eq!(out.stderr, "note on stderr\n");
}
