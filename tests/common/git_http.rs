//! Git's smart HTTP protocol on loopback: a small HTTP server that hands
//! every request to the real `git http-backend` (CGI), optionally behind
//! HTTP Basic authentication with a token, as a forge would.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

pub struct GitHttp {
    pub url: String,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn base64(input: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl GitHttp {
    /// Serves the repositories under `root`; with `token`, only to clients
    /// that send it as the Basic password.
    pub fn start(root: &Path, token: Option<&str>) -> GitHttp {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let s2 = server.clone();
        let root: PathBuf = root.to_path_buf();
        let token = token.map(str::to_string);
        let thread = std::thread::spawn(move || {
            for mut req in s2.incoming_requests() {
                let header = |name: &str| {
                    req.headers()
                        .iter()
                        .find(|h| h.field.to_string().eq_ignore_ascii_case(name))
                        .map(|h| h.value.as_str().to_string())
                };
                if let Some(t) = &token {
                    let ok = header("Authorization")
                        .and_then(|a| a.strip_prefix("Basic ").map(str::to_string))
                        .is_some_and(|b| {
                            [format!("x-access-token:{t}"), format!("git:{t}")]
                                .iter()
                                .any(|c| base64(c.as_bytes()) == b)
                        });
                    if !ok {
                        let mut resp = tiny_http::Response::from_string("Authentication required")
                            .with_status_code(401);
                        resp.add_header(
                            tiny_http::Header::from_bytes(
                                "WWW-Authenticate",
                                "Basic realm=\"git\"",
                            )
                            .unwrap(),
                        );
                        let _ = req.respond(resp);
                        continue;
                    }
                }
                let content_type = header("Content-Type").unwrap_or_default();
                let encoding = header("Content-Encoding").unwrap_or_default();
                let mut body = Vec::new();
                let _ = req.as_reader().read_to_end(&mut body);
                let url = req.url().to_string();
                let (path, query) = url.split_once('?').unwrap_or((&url, ""));
                let mut child = Command::new("git")
                    .arg("http-backend")
                    .env("GIT_PROJECT_ROOT", &root)
                    .env("GIT_HTTP_EXPORT_ALL", "1")
                    .env("PATH_INFO", path)
                    .env("QUERY_STRING", query)
                    .env("REQUEST_METHOD", req.method().as_str())
                    .env("CONTENT_TYPE", content_type)
                    .env("CONTENT_LENGTH", body.len().to_string())
                    .env("HTTP_CONTENT_ENCODING", encoding)
                    .env("REMOTE_USER", "drgit-test")
                    .env("REMOTE_ADDR", "127.0.0.1")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let writer = std::thread::spawn(move || {
                    let _ = stdin.write_all(&body);
                });
                let output = child.wait_with_output().unwrap();
                let _ = writer.join();
                let out = output.stdout;
                let split = out
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|i| (i, 4))
                    .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
                let (head, payload) = match split {
                    Some((i, n)) => (
                        String::from_utf8_lossy(&out[..i]).into_owned(),
                        out[i + n..].to_vec(),
                    ),
                    None => (String::new(), out),
                };
                let mut status = 200;
                let mut headers = Vec::new();
                for line in head.lines() {
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("Status") {
                            status = v
                                .trim()
                                .split(' ')
                                .next()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(500);
                        } else {
                            headers.push(
                                tiny_http::Header::from_bytes(
                                    k.trim().as_bytes(),
                                    v.trim().as_bytes(),
                                )
                                .unwrap(),
                            );
                        }
                    }
                }
                let mut resp = tiny_http::Response::from_data(payload).with_status_code(status);
                for h in headers {
                    resp.add_header(h);
                }
                let _ = req.respond(resp);
            }
        });
        GitHttp {
            url: format!("http://127.0.0.1:{port}"),
            server,
            thread: Some(thread),
        }
    }
}
