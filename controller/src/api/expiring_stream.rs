//! A TLS connection that ends when its client certificate does: at the
//! certificate's notAfter every read and write fails, so hyper closes the
//! connection. That ends an agent's link (it gets no job from that moment and
//! must reconnect, which the handshake refuses until its certificate is
//! renewed) and every operator call or stream (`--follow`) still open on it.
//! rustls checks validity only at the handshake; this covers the rest.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// A connection that fails once `expiry` has passed.
pub struct ExpiringStream {
    inner: TlsStream<TcpStream>,
    /// `None`: no client certificate to expire (never on an mTLS listener).
    expiry: Option<Pin<Box<Sleep>>>,
}

impl ExpiringStream {
    /// Wraps a finished handshake; the deadline is the client leaf's notAfter.
    pub fn new(inner: TlsStream<TcpStream>) -> Self {
        let not_after = inner
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| pgrollout_shared::tls::inspect(leaf).ok())
            .map(|info| info.not_after);
        let expiry = not_after.map(|not_after| {
            let left = not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            Box::pin(tokio::time::sleep(left))
        });
        ExpiringStream { inner, expiry }
    }

    /// Ready with an error once the certificate has expired; otherwise
    /// registers the waker so the connection's task is woken at expiry.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let expiry = self.expiry.as_mut()?;
        expiry.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client certificate expired",
            )
        })
    }
}

impl AsyncRead for ExpiringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(error) = self.expired(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ExpiringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.expired(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for ExpiringStream {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
