//! `fake-imds --listen 169.254.169.254:80`: the node's metadata service, as
//! a process inside a test network namespace.

use iamlet_testkit::imds::FakeImds;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = match (args.next().as_deref(), args.next()) {
        (Some("--listen"), Some(addr)) => addr,
        _ => {
            eprintln!("usage: fake-imds --listen IP:PORT");
            std::process::exit(2);
        }
    };
    let Ok(addr) = listen.parse() else {
        eprintln!("fake-imds: --listen must be IP:PORT");
        std::process::exit(2);
    };
    let imds = FakeImds::start_on(addr).await;
    println!("fake-imds listening on {}", imds.addr);
    let _ = tokio::signal::ctrl_c().await;
}
