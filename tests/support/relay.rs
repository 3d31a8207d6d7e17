//! A simulated pod's network: a loopback port whose connections reach the
//! agent from the pod's own source address (127.0.0.x), so unmodified
//! clients pointed at the relay are seen by the agent as that pod.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub struct PodRelay {
    pub addr: SocketAddr,
    pub pod_ip: IpAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PodRelay {
    pub async fn start(pod_ip: &str, agent: SocketAddr) -> PodRelay {
        let pod_ip: IpAddr = pod_ip.parse().expect("pod IP");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay port");
        let addr = listener.local_addr().expect("relay address");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = connect_from(pod_ip, agent).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        PodRelay { addr, pod_ip, task }
    }

    /// The metadata endpoint clients of this pod use.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for PodRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP connection from `source` (a 127.0.0.x address) to `target`.
pub async fn connect_from(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}
