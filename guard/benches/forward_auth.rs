//! Forward-auth throughput through nginx: the same nginx, the same upstream, with and without `auth_request` to
//! the `offboard-guard` sidecar, loaded by `wrk` (Debian package `wrk`). Run it with `scripts/guard-nginx-bench.sh`
//! or:
//!
//! ```text
//! cargo bench -p offboard-guard --bench forward_auth -- [--seconds 5] [--connections 16]
//! ```
//!
//! A real offboard (SQLite in a temp dir) and the sidecar (`offboard_guard::sidecar::serve`, its default actix
//! workers) run in this process; nginx (one worker process) runs three servers: `auth` with the README's
//! `auth_request` configuration, `plain` without it, both proxying to `upstream`, which answers 200 itself. `wrk`
//! (one thread) sends one user's valid token on every request. Every answer must be a 200: `wrk` counts the others,
//! and any makes the run fail. Everything shares the machine: compare runs made on one machine.
#![expect(
    clippy::expect_used,
    clippy::print_stdout,
    reason = "bench: a panic is a failed run with its message; the figures are printed"
)]

#[path = "../tests/guard/harness.rs"]
#[expect(
    dead_code,
    unused_macros,
    unused_imports,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "the tests' harness: only part of it is used here, and a panic is a failed run"
)]
mod harness;

use std::process::Command;

use offboard_guard::GuardConfig;

use harness::{Backend, Offboard};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port()
}

/// nginx, run in the foreground; killed when dropped.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs wrk against `url` with the token; returns (requests a second, requests that were not 2xx).
fn wrk(url: &str, token: &str, seconds: u64, connections: u64) -> (f64, u64) {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output: {text}"));
    let bad = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (rate, bad)
}

/// The README's `auth_request` configuration on `auth`, the same proxying without it on `plain`, and the upstream.
fn nginx_conf(dir: &std::path::Path, auth: u16, plain: u16, upstream: u16, sidecar: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{auth};

        location / {{
            auth_request /_offboard_check;
            auth_request_set $auth_subject $upstream_http_x_auth_subject;
            auth_request_set $auth_user $upstream_http_x_auth_user;
            auth_request_set $auth_groups $upstream_http_x_auth_groups;
            proxy_set_header X-Auth-Subject $auth_subject;
            proxy_set_header X-Auth-User $auth_user;
            proxy_set_header X-Auth-Groups $auth_groups;
            proxy_pass http://127.0.0.1:{upstream};
        }}

        location = /_offboard_check {{
            internal;
            proxy_pass http://{sidecar}/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
    }}
    server {{
        listen 127.0.0.1:{plain};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
        }}
    }}
    server {{
        listen 127.0.0.1:{upstream};
        location / {{
            return 200 "ok\n";
        }}
    }}
}}
"#
    )
}

fn main() {
    let seconds = arg("--seconds", 5);
    let connections = arg("--connections", 16);
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is installed (apt-get install nginx)");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let ob = Offboard::start(Backend::Sqlite);
            let (stream, secret) = ob.poll_stream("nginx-bench").await;
            let config = GuardConfig::new(&ob.issuer, &ob.issuer, stream, secret);
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            let sidecar = listener.local_addr().expect("an address").to_string();
            let server = offboard_guard::sidecar::serve(config, listener).expect("the sidecar");
            actix_web::rt::spawn(server);
            ob.create_user("bench@example.com").await;
            let token = ob.login("bench@example.com").access_token;
            tx.send((sidecar, token)).expect("the bench waits");
            std::future::pending::<()>().await;
        });
    });
    let (sidecar, token) = rx.recv().expect("set-up");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (auth, plain, upstream) = (free_port(), free_port(), free_port());
    let conf = nginx_conf(dir.path(), auth, plain, upstream, &sidecar);
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("the configuration");
    let _nginx = Nginx(
        Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg("stderr")
            .spawn()
            .expect("nginx starts"),
    );
    // Ready once a request through auth_request passes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ok = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("http://127.0.0.1:{auth}/"))
            .output()
            .is_ok_and(|o| o.stdout == b"200");
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nginx and the sidecar did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("wrk -t1 -c{connections} -d{seconds}s, one valid token on every request:");
    for (name, port) in [
        ("nginx without auth_request", plain),
        ("nginx + auth_request to the sidecar", auth),
    ] {
        let (rate, bad) = wrk(&format!("http://127.0.0.1:{port}/"), &token, seconds, connections);
        assert_eq!(bad, 0, "{name}: {bad} answers were not 2xx");
        println!("  {name}: {rate:.0} requests/s");
    }
}
