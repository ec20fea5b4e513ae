//! A deadline for a connection's first byte of HTTP.
//!
//! hyper's `header_read_timeout` starts once hyper reads a request, but the `auto` builder
//! first reads the connection's opening bytes to tell HTTP/1.1 from HTTP/2, and that read has
//! no timeout: a client that connects (or completes a TLS handshake, or only sends TLS
//! records that carry no data, such as a renegotiation attempt) and then stays silent would
//! hold its `server.limits.max_connections` slot for ever. [`FirstByte`] fails the read with
//! `TimedOut` when no byte has arrived within the deadline; after the first byte hyper's own
//! timeouts apply.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream whose first read must deliver a byte before a deadline.
#[derive(Debug)]
pub(crate) struct FirstByte<S> {
    inner: S,
    /// Until the first byte; `None` after it.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> FirstByte<S> {
    /// `inner`, whose first byte must arrive within `timeout` from now.
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, deadline: Some(Box::pin(tokio::time::sleep(timeout))) }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByte<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                // Data, the end of the stream or an error: the wait for a first byte is over.
                this.deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired =
                    this.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request bytes within server.limits.header_read_timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByte<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_a_talking_one_does_not() {
        let (_client, server) = tokio::io::duplex(64);
        let mut silent = FirstByte::new(server, Duration::from_secs(2));
        let mut buf = [0u8; 8];
        let error = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = FirstByte::new(server, Duration::from_secs(2));
        client.write_all(b"GET").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 3);
        // After the first byte the deadline is gone: a later pause is hyper's business.
        tokio::time::advance(Duration::from_secs(10)).await;
        client.write_all(b" /").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 2);
    }
}
