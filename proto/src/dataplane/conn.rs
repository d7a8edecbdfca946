//! A buffered data-plane connection with deadlines: the one way every component talks
//! the framed protocol (clients, the master's version bumps, chunkserver pipelines).

use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::codec::{read_frame, read_frame_into, write_frame, Frame, FrameError};
use super::frame::Msg;
use crate::limits::{DATAPLANE_CONNECT_TIMEOUT_MS, DATAPLANE_IO_TIMEOUT_MS};

/// Socket buffer sizes: large enough for one packet in flight each way.
const CONN_BUFFER_BYTES: usize = 256 << 10;

pub struct DataConn {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    io_timeout: Duration,
    peer: String,
}

impl DataConn {
    /// Connects with the default connect deadline.
    pub async fn connect(addr: &str) -> Result<DataConn, FrameError> {
        Self::connect_timeout(addr, Duration::from_millis(DATAPLANE_CONNECT_TIMEOUT_MS)).await
    }

    pub async fn connect_timeout(addr: &str, timeout: Duration) -> Result<DataConn, FrameError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                FrameError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                ))
            })??;
        Ok(Self::from_stream(stream, addr.to_string()))
    }

    pub fn from_stream(stream: TcpStream, peer: String) -> DataConn {
        // Latency matters more than packet count for acks and small requests.
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        DataConn {
            reader: BufReader::with_capacity(CONN_BUFFER_BYTES, r),
            writer: BufWriter::with_capacity(CONN_BUFFER_BYTES, w),
            io_timeout: Duration::from_millis(DATAPLANE_IO_TIMEOUT_MS),
            peer,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn set_io_timeout(&mut self, timeout: Duration) {
        self.io_timeout = timeout;
    }

    /// Queues a frame; call [`DataConn::flush`] (or [`DataConn::send`]) to push it out.
    pub async fn write(&mut self, msg: &Msg, payload: &[u8]) -> Result<(), FrameError> {
        tokio::time::timeout(self.io_timeout, write_frame(&mut self.writer, msg, payload))
            .await
            .map_err(|_| self.timed_out("write"))?
    }

    pub async fn flush(&mut self) -> Result<(), FrameError> {
        tokio::time::timeout(self.io_timeout, self.writer.flush())
            .await
            .map_err(|_| self.timed_out("flush"))?
            .map_err(FrameError::Io)
    }

    /// Writes one frame and flushes.
    pub async fn send(&mut self, msg: &Msg, payload: &[u8]) -> Result<(), FrameError> {
        self.write(msg, payload).await?;
        self.flush().await
    }

    /// Reads one frame within the I/O deadline.
    pub async fn recv(&mut self) -> Result<Frame, FrameError> {
        tokio::time::timeout(self.io_timeout, read_frame(&mut self.reader))
            .await
            .map_err(|_| self.timed_out("read"))?
    }

    /// Reads one frame within the I/O deadline, its payload into the front of `dst`;
    /// returns the message and the payload length (see [`read_frame_into`]).
    pub async fn recv_into(&mut self, dst: &mut [u8]) -> Result<(Msg, usize), FrameError> {
        tokio::time::timeout(self.io_timeout, read_frame_into(&mut self.reader, dst))
            .await
            .map_err(|_| self.timed_out("read"))?
    }

    /// Reads one frame with no deadline (a server waiting for the next request).
    pub async fn recv_idle(&mut self) -> Result<Frame, FrameError> {
        read_frame(&mut self.reader).await
    }

    /// Sends a request and reads the single reply frame.
    pub async fn call(&mut self, msg: &Msg) -> Result<Frame, FrameError> {
        self.send(msg, &[]).await?;
        self.recv().await
    }

    fn timed_out(&self, what: &str) -> FrameError {
        FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("data-plane {what} to {} timed out", self.peer),
        ))
    }
}
