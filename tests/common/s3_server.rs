//! A real S3 server on loopback for tests: moto's server mode
//! (`pip install 'moto[server]'`), one per test, buckets made per test,
//! objects put with boto3.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const KEY_ID: &str = "AKIADRGITTESTKEY0001";
pub const SECRET: &str = "drgit/test/secret+key/never-printed";

pub struct S3Server {
    pub endpoint: String,
    child: Child,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    /// Starts moto; `env` adds settings (e.g. to enforce credentials).
    pub fn start(env: &[(&str, &str)]) -> S3Server {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .expect("python3 -m moto.server (pip install 'moto[server]')");
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = S3Server { endpoint, child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("moto did not start on port {port}; is `moto[server]` installed?");
    }

    fn python(&self, script: &str, args: &[&str]) {
        self.python_out(script, args);
    }

    fn python_out(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key under `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.python_out(
            "import sys, boto3\ns3 = boto3.client('s3', endpoint_url=sys.argv[1])\nfor p in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):\n    for o in p.get('Contents', []):\n        print(o['Key'])",
            &[bucket, prefix],
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Puts one object with the given content.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        self.python(
            "import sys, boto3\nboto3.client('s3', endpoint_url=sys.argv[1]).put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=sys.argv[4].encode())",
            &[bucket, key, &String::from_utf8_lossy(body)],
        );
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.python(
            "import sys, boto3\nboto3.client('s3', endpoint_url=sys.argv[1]).create_bucket(Bucket=sys.argv[2])",
            &[bucket],
        );
    }

    /// Uploads every file under `dir` as `<prefix><relative path>`.
    pub fn upload_dir(&self, bucket: &str, dir: &Path, prefix: &str) {
        self.python(
            "import os, sys, boto3\ns3 = boto3.client('s3', endpoint_url=sys.argv[1])\nfor root, _, files in os.walk(sys.argv[3]):\n    for f in files:\n        p = os.path.join(root, f)\n        s3.upload_file(p, sys.argv[2], sys.argv[4] + os.path.relpath(p, sys.argv[3]))",
            &[bucket, dir.to_str().unwrap(), prefix],
        );
    }

    /// Puts `count` small objects named by `pattern` (`{i}` → number).
    pub fn put_many(&self, bucket: &str, keys: &[String]) {
        let list = keys.join("\n");
        self.python(
            "import sys, boto3\ns3 = boto3.client('s3', endpoint_url=sys.argv[1])\nfor k in sys.argv[3].splitlines():\n    s3.put_object(Bucket=sys.argv[2], Key=k, Body=b'x')",
            &[bucket, &list],
        );
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        self.python(
            "import sys, boto3\nboto3.client('s3', endpoint_url=sys.argv[1]).delete_object(Bucket=sys.argv[2], Key=sys.argv[3])",
            &[bucket, key],
        );
    }
}
