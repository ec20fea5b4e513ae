//! A bare TCP relay: the network hop a proxy adds, with none of a proxy's work. Scenario 1
//! runs the same load through it, on the gateway's CPU, so that the report can say how much
//! of the gateway's added latency the extra hop alone costs on this machine.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Relays every connection accepted on `listener` to `upstream`, byte for byte, until killed.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
            // As the gateway does: small requests and answers go out at once.
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_go_through_both_ways_unchanged() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            socket.read_exact(&mut buf).await.unwrap();
            buf.reverse();
            socket.write_all(&buf).await.unwrap();
        });
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        tokio::spawn(serve(relay, echo_addr));
        let mut client = TcpStream::connect(relay_addr).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut answer = [0u8; 5];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"olleh");
    }
}
