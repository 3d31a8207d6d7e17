//! `fake-apiserver --listen 127.0.0.1:PORT`: the test API server as a
//! process, for the demo and for poking at with kubectl (`get`, `annotate`,
//! `create`, `delete` on pods, namespaces and service accounts; `create
//! token`, whose tokens its TokenReview endpoint accepts; `describe` and
//! `get events` for the Events an agent records).

use std::time::Duration;

use iamlet_testkit::ApiServer;

#[tokio::main]
async fn main() {
    let mut listen = "127.0.0.1:8080".to_string();
    let mut bookmark_seconds = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .unwrap_or_else(|| usage("--listen needs an address"))
            }
            "--bookmark-interval-seconds" => {
                bookmark_seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage("--bookmark-interval-seconds needs a number"))
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let addr = listen
        .parse()
        .unwrap_or_else(|_| usage("--listen must be IP:PORT"));
    let server = match ApiServer::start_on(addr, Duration::from_secs(bookmark_seconds)).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("fake-apiserver: cannot listen on {addr}: {error}");
            std::process::exit(1);
        }
    };
    println!("fake-apiserver listening on {}", server.url());
    let _ = tokio::signal::ctrl_c().await;
}

fn usage(message: &str) -> ! {
    eprintln!(
        "fake-apiserver: {message}\nusage: fake-apiserver [--listen IP:PORT] [--bookmark-interval-seconds N]"
    );
    std::process::exit(2);
}
