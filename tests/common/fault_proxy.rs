//! A fault-injecting HTTP proxy on loopback, in front of the test S3
//! server: it forwards each request (one per connection) and, while faults
//! are queued, answers 500/503 instead, answers slowly, or cuts the
//! response off in the middle of its body.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward untouched (to let some requests through before others fail).
    Pass,
    /// Answer with this status (and an S3-style XML error body).
    Status(u16),
    /// Forward, but send only this many body bytes, then close.
    CutBody(usize),
    /// Forward after this delay.
    Slow(Duration),
}

pub struct FaultProxy {
    pub endpoint: String,
    /// Faults for the next requests whose request line contains the text.
    pub faults: Arc<Mutex<VecDeque<(String, Fault)>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Per watched text: (requests in flight now, the most at once).
    pub in_flight: Arc<Mutex<Vec<(String, usize, usize)>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_head(s: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = s.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Some((buf, rest));
        }
    }
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Counts a request in flight for every watched text its line contains.
fn flight(in_flight: &Mutex<Vec<(String, usize, usize)>>, line: &str, delta: isize) {
    for (m, now, most) in in_flight.lock().unwrap().iter_mut() {
        if m.split('|').any(|alt| line.contains(alt)) {
            *now = (*now as isize + delta).max(0) as usize;
            *most = (*most).max(*now);
        }
    }
}

fn handle(
    client: TcpStream,
    upstream: &str,
    faults: &Mutex<VecDeque<(String, Fault)>>,
    requests: &Mutex<Vec<String>>,
    in_flight: &Mutex<Vec<(String, usize, usize)>>,
) {
    let mut line = String::new();
    forward(client, upstream, faults, requests, in_flight, &mut line);
    if !line.is_empty() {
        flight(in_flight, &line, -1);
    }
}

fn forward(
    mut client: TcpStream,
    upstream: &str,
    faults: &Mutex<VecDeque<(String, Fault)>>,
    requests: &Mutex<Vec<String>>,
    in_flight: &Mutex<Vec<(String, usize, usize)>>,
    seen: &mut String,
) {
    let Some((head, mut body)) = read_head(&mut client) else {
        return;
    };
    let want = content_length(&head);
    while body.len() < want {
        let mut b = vec![0u8; want - body.len()];
        match client.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&b[..n]),
        }
    }
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let line = head_text.lines().next().unwrap_or_default().to_string();
    requests.lock().unwrap().push(head_text.clone());
    flight(in_flight, &line, 1);
    *seen = line.clone();
    let fault = {
        let mut f = faults.lock().unwrap();
        f.iter()
            .position(|(m, _)| line.contains(m.as_str()))
            .and_then(|i| f.remove(i))
            .map(|(_, f)| f)
    };
    if let Some(Fault::Status(code)) = fault {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>injected</Message></Error>",
            if code == 503 {
                "SlowDown"
            } else {
                "InternalError"
            }
        );
        let _ = write!(
            client,
            "HTTP/1.1 {code} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    if let Some(Fault::Slow(d)) = fault {
        std::thread::sleep(d);
    }
    // Forward with the connection closed after the answer.
    let mut up = match TcpStream::connect(upstream) {
        Ok(u) => u,
        Err(_) => return,
    };
    let mut fwd: String = head_text
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    fwd = fwd.trim_end_matches("\r\n").to_string() + "\r\nConnection: close\r\n\r\n";
    let _ = up.write_all(fwd.as_bytes());
    let _ = up.write_all(&body);
    let mut resp = Vec::new();
    let _ = up.read_to_end(&mut resp);
    match fault {
        Some(Fault::CutBody(n)) => {
            let split = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| i + 4)
                .unwrap_or(0);
            let end = (split + n).min(resp.len());
            let _ = client.write_all(&resp[..end]);
        }
        _ => {
            let _ = client.write_all(&resp);
        }
    }
}

impl FaultProxy {
    pub fn start(upstream_endpoint: &str) -> FaultProxy {
        let upstream = upstream_endpoint.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Mutex::new(VecDeque::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(Mutex::new(Vec::new()));
        let (f2, r2, s2, i2) = (
            faults.clone(),
            requests.clone(),
            stop.clone(),
            in_flight.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (up, f3, r3, i3) = (upstream.clone(), f2.clone(), r2.clone(), i2.clone());
                std::thread::spawn(move || handle(conn, &up, &f3, &r3, &i3));
            }
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            faults,
            requests,
            in_flight,
            stop,
            port,
        }
    }

    /// Counts the requests whose first line contains the text (or one of
    /// its `|`-separated alternatives) that are in flight at once (see
    /// `most_in_flight`).
    pub fn watch(&self, request_contains: &str) {
        self.in_flight
            .lock()
            .unwrap()
            .push((request_contains.to_string(), 0, 0));
    }

    /// The most watched requests that were in flight at once.
    pub fn most_in_flight(&self, request_contains: &str) -> usize {
        self.in_flight
            .lock()
            .unwrap()
            .iter()
            .find(|(m, _, _)| m == request_contains)
            .map_or(0, |(_, _, most)| *most)
    }

    pub fn inject(&self, request_contains: &str, fault: Fault) {
        self.faults
            .lock()
            .unwrap()
            .push_back((request_contains.to_string(), fault));
    }

    /// Requests whose first line contains the text.
    pub fn count(&self, request_contains: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|h| {
                h.lines()
                    .next()
                    .unwrap_or_default()
                    .contains(request_contains)
            })
            .count()
    }

    /// Every request head (request line and headers) so far.
    pub fn heads(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}
