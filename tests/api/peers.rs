//! Real peers on loopback for the fan-out tests: a push receiver (RFC 8935) that records what it is sent and
//! answers as told, one thread per connection so a slow answer holds only its own push.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// One request the receiver accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
}

/// A push receiver. It answers `status` (202 by default; a 400 carries `err` as its RFC 8935 error code) after
/// holding the request `delay_ms`, and records a request only when it answers 202.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub status: Arc<AtomicU16>,
    pub err: Arc<Mutex<&'static str>>,
    pub delay_ms: Arc<AtomicU64>,
    /// Set when any request has arrived (before its answer).
    pub seen_request: Arc<AtomicBool>,
    /// When not 0, a 400's `description` is this many bytes long (a receiver that answers a huge error body).
    pub description_bytes: Arc<AtomicUsize>,
}

pub fn receiver() -> Receiver {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rx = Receiver {
        url: format!("http://{}/events", listener.local_addr().unwrap()),
        received: Arc::default(),
        status: Arc::new(AtomicU16::new(202)),
        err: Arc::new(Mutex::new("invalid_key")),
        delay_ms: Arc::default(),
        seen_request: Arc::default(),
        description_bytes: Arc::default(),
    };
    let shared = (
        rx.received.clone(),
        rx.status.clone(),
        rx.err.clone(),
        rx.delay_ms.clone(),
        rx.seen_request.clone(),
        rx.description_bytes.clone(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let shared = shared.clone();
            std::thread::spawn(move || answer(stream, &shared));
        }
    });
    rx
}

type Shared = (
    Arc<Mutex<Vec<Received>>>,
    Arc<AtomicU16>,
    Arc<Mutex<&'static str>>,
    Arc<AtomicU64>,
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
);

fn answer(mut stream: std::net::TcpStream, (log, status, err, delay, seen, padding): &Shared) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        headers.push(line.trim_end().to_owned());
    }
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    seen.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
    let code = status.load(Ordering::SeqCst);
    if code == 202 {
        log.lock().unwrap().push(Received {
            content_type: header("content-type"),
            authorization: header("authorization"),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let padding = padding.load(Ordering::SeqCst);
    let reply = if code == 400 && padding > 0 {
        let e = *err.lock().unwrap();
        format!(r#"{{"err":"{e}","description":"{}"}}"#, "x".repeat(padding))
    } else if code == 400 {
        let e = *err.lock().unwrap();
        format!(r#"{{"err":"{e}","description":"unknown kid"}}"#)
    } else {
        String::new()
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

impl Receiver {
    pub fn got(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The `jti` of each accepted SET, in arrival order (the signature is checked elsewhere).
    pub fn jtis(&self) -> Vec<String> {
        self.got()
            .iter()
            .map(|r| {
                let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&r.body).unwrap();
                claims["jti"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}
