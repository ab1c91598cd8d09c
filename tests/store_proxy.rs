//! The shared test helper `TcpProxy` does what outage tests rely on: forwards both ways, closes
//! live connections on `cut`, refuses new ones while cut, and forwards again after `restore`.

mod support;

use std::time::Duration;

use support::TcpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(5);

/// An echo server on loopback.
async fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    Ok(buf)
}

/// True when the peer closed the connection (EOF or reset) within WAIT.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test]
async fn cut_closes_and_refuses_restore_forwards_again() {
    let upstream = echo_server().await;
    let (addr, proxy) = TcpProxy::start(upstream).await.unwrap();
    assert!(addr.ip().is_loopback());

    let mut a = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut a, b"hello").await.unwrap(), b"hello");
    assert_eq!(proxy.accepted(), 1);

    proxy.cut();
    assert!(proxy.is_cut());
    assert!(closed(&mut a).await, "live connection closed by cut");
    // New connections are accepted by the OS but closed at once.
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut b).await, "new connection refused while cut");
    assert_eq!(proxy.accepted(), 1);

    proxy.restore();
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut c, b"again").await.unwrap(), b"again");
    assert_eq!(proxy.accepted(), 2);

    drop(proxy);
    assert!(
        closed(&mut c).await,
        "dropping the proxy closes its connections"
    );
}
