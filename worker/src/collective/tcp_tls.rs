//! What a ring link reads and writes through: the TCP socket itself, or TLS over it (`--tls-*`).
//!
//! The TLS stream is driven by hand rather than through rustls's `Stream`: that one may block
//! reading when asked to write (a zero-length write with nothing queued), and a ring link's right
//! end only ever writes after the handshake. Here a write encrypts and sends, and a read receives
//! and decrypts; nothing else touches the socket. The socket's timeouts bound both, as on a plain
//! link, and a partial record stays in rustls's buffers across a timeout.
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use tokio_rustls::rustls;

use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::tls::{explain, TlsConfig};

/// One end of a ring connection.
#[derive(Debug)]
pub(super) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Transport {
    /// The socket under the transport: its timeouts, shutdown and clones.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}

/// A TLS connection over a blocking socket, after a completed handshake.
pub(super) struct TlsStream {
    conn: Connection,
    sock: TcpStream,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsStream({:?})", self.sock)
    }
}

/// A rustls error as an I/O error whose message says what to fix.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, explain(&e))
}

impl TlsStream {
    /// The dialling end: handshakes with the peer at `sock` (it must prove its certificate).
    pub fn connect(sock: TcpStream, config: Arc<ClientConfig>) -> io::Result<TlsStream> {
        let conn = ClientConnection::new(config, TlsConfig::server_name()).map_err(tls_error)?;
        TlsStream::handshake(conn.into(), sock)
    }

    /// The accepting end.
    pub fn accept(sock: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(config).map_err(tls_error)?;
        TlsStream::handshake(conn.into(), sock)
    }

    fn handshake(conn: Connection, sock: TcpStream) -> io::Result<TlsStream> {
        let mut stream = TlsStream { conn, sock };
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                // Tell the peer why (the alert rustls queued), best effort.
                let _ = stream.send_pending();
                return Err(reexplain(e));
            }
        }
        stream.send_pending()?;
        Ok(stream)
    }

    /// Sends every encrypted byte rustls holds.
    fn send_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

/// `complete_io` wraps rustls errors as InvalidData with the bare error: give them their meaning.
fn reexplain(e: io::Error) -> io::Error {
    match crate::tls::explain_io(&e) {
        Some(message) => io::Error::new(e.kind(), message),
        None => e,
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Plaintext already decrypted; WouldBlock: none yet. A close without close_notify
            // comes back as UnexpectedEof, as the plain socket's end does through read_exact.
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            // A socket timeout or reset surfaces here, as it would on a plain link.
            self.conn.read_tls(&mut self.sock)?;
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.send_pending();
                return Err(tls_error(e));
            }
            // Post-handshake messages may want an answer (a key update).
            self.send_pending()?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // rustls takes what fits its send buffer (64 KiB); write_all comes back for the rest.
        let taken = self.conn.writer().write(buf)?;
        self.send_pending()?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        self.send_pending()
    }
}
