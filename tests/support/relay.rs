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
        Self::start_with(pod_ip, agent, false).await
    }

    /// Like [`PodRelay::start`], but the relay behaves like an HTTP proxy in
    /// the pod's path: it adds `X-Forwarded-For` to every request it carries.
    pub async fn start_forwarding(pod_ip: &str, agent: SocketAddr) -> PodRelay {
        Self::start_with(pod_ip, agent, true).await
    }

    async fn start_with(pod_ip: &str, agent: SocketAddr, add_forwarded_for: bool) -> PodRelay {
        let pod_ip: IpAddr = pod_ip.parse().expect("pod IP");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay port");
        let addr = listener.local_addr().expect("relay address");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = connect_from(pod_ip, agent).await else {
                        return;
                    };
                    if add_forwarded_for {
                        let _ = relay_adding_forwarded_for(inbound, outbound).await;
                    } else {
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

/// Copies both ways, inserting a header after the request line of each
/// request the client sends (each arrives in one read: clients here send a
/// request at a time, without bodies).
async fn relay_adding_forwarded_for(
    inbound: TcpStream,
    outbound: TcpStream,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut agent_read, mut agent_write) = outbound.into_split();
    let upstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buffer).await?;
            if n == 0 {
                return agent_write.shutdown().await;
            }
            let chunk = &buffer[..n];
            match chunk.windows(2).position(|w| w == b"\r\n") {
                Some(end) if chunk.starts_with(b"GET ") || chunk.starts_with(b"PUT ") => {
                    agent_write.write_all(&chunk[..end + 2]).await?;
                    agent_write
                        .write_all(b"X-Forwarded-For: 198.51.100.7\r\n")
                        .await?;
                    agent_write.write_all(&chunk[end + 2..]).await?;
                }
                _ => agent_write.write_all(chunk).await?,
            }
        }
    };
    let downstream = async move {
        tokio::io::copy(&mut agent_read, &mut client_write)
            .await
            .map(drop)
    };
    tokio::try_join!(upstream, downstream).map(drop)
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
