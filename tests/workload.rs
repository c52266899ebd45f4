//! The workload kinds through the real kube client, against the FAKE API
//! server: pod exec over Kubernetes' channel protocol (stdout, stderr and
//! the exit status apart), StatefulSet rollouts, ConfigMaps, short-lived
//! pods and their logs.

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
    assert!(
        out.stdout.ends_with(&format!(
            " | certificate: \"{}\"\n",
            common::fake_cluster::kanidm_cert_value()
        )),
        "{}",
        out.stdout
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

#[test]
fn statefulset_configmap_and_a_short_lived_pod() {
    let kube = FakeCluster::start(
        std::path::PathBuf::from("/nonexistent"),
        Behaviour::default(),
    );
    {
        let mut st = kube.state.lock().unwrap();
        st.objects.insert(
            "/apis/apps/v1/namespaces/kanidm/statefulsets/kanidm".into(),
            serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "kanidm", "namespace": "kanidm", "generation": 4},
                "spec": {"replicas": 2, "selector": {}, "serviceName": "kanidm", "template": {}},
                "status": {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 1, "observedGeneration": 4,
                           "currentRevision": "kanidm-5c1", "updateRevision": "kanidm-7d9"}}),
        );
        st.objects.insert(
            "/api/v1/namespaces/kanidm/configmaps/kanidm-server-config".into(),
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kanidm-server-config", "namespace": "kanidm"},
                "data": {"server.toml": "origin = \"https://idm.example\"\n"}}),
        );
        st.logs
            .insert("kanidm-restore".into(), "restore complete\n".into());
    }
    let dir = tempfile::tempdir().unwrap();
    let k = Kube::connect(Some(&kube.kubeconfig(dir.path())), None).unwrap();

    let sts = k.statefulset("kanidm", "kanidm").unwrap().unwrap();
    assert_eq!((sts.replicas, sts.ready, sts.updated), (2, 1, 1));
    assert!(!sts.rolled_out(), "one pod still on the old revision");
    assert!(k.statefulset("kanidm", "nope").unwrap().is_none());

    let cm = k
        .config_map("kanidm", "kanidm-server-config")
        .unwrap()
        .unwrap();
    assert!(cm["server.toml"].contains("idm.example"));

    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kanidm-restore", "namespace": "kanidm"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "restore", "image": "docker.io/kanidm/server:1.9.1"}]}
    }))
    .unwrap();
    k.create_pod("kanidm", &pod).unwrap();
    assert!(k.create_pod("kanidm", &pod).is_err(), "exists already");
    assert_eq!(
        k.pod("kanidm", "kanidm-restore").unwrap().unwrap().phase,
        "Pending"
    );
    let done = k.pod("kanidm", "kanidm-restore").unwrap().unwrap();
    assert_eq!(done.phase, "Succeeded");
    assert_eq!(done.exit_codes, vec![("restore".to_string(), 0)]);
    assert_eq!(
        k.pod_log("kanidm", "kanidm-restore", Some("restore"), Some(20))
            .unwrap(),
        "restore complete\n"
    );
    k.delete_pod("kanidm", "kanidm-restore").unwrap();
    k.delete_pod("kanidm", "kanidm-restore").unwrap();
    assert!(k.pod("kanidm", "kanidm-restore").unwrap().is_none());
}

#[test]
fn a_file_streams_into_a_pod_over_exec() {
    use sha2::Digest;
    let kube = FakeCluster::start(
        std::path::PathBuf::from("/nonexistent"),
        Behaviour::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let k = Kube::connect(Some(&kube.kubeconfig(dir.path())), None).unwrap();
    // More than one 64 KiB frame, not a multiple of it.
    let data: Vec<u8> = (0..200_003u32).map(|i| (i * 7 % 251) as u8).collect();
    let script = format!(
        "head -c {} > '/data/b.gz.part' && mv '/data/b.gz.part' '/data/b.gz' && sha256sum '/data/b.gz'",
        data.len()
    );
    let out = k
        .exec_with_input(
            "kanidm",
            "drgit-copy",
            None,
            &["sh", "-c", &script],
            &mut std::io::Cursor::new(data.clone()),
        )
        .unwrap();
    let hex: String = sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(out.stdout, format!("{hex}  /data/b.gz\n"));
    assert!(out.success);
    assert_eq!(kube.state.lock().unwrap().volume["/data/b.gz"], data);
}
