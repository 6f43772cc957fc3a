//! A policy's stdout and stderr: one ring per store that keeps the last
//! [`Limits::OUTPUT_RING`](crate::Limits::OUTPUT_RING) bytes and accepts every write.
//!
//! wasmtime-wasi's `MemoryOutputPipe` refuses writes once full, and Rust's `eprintln!` panics
//! when a write fails, so a chatty policy would trap on its 16 Ki-th byte. A ring never
//! fills, never blocks and never fails, and what it keeps is the most recent output: where a
//! panic message is.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The last `capacity` bytes written to a guest's output streams. Clones share the ring.
#[derive(Clone)]
pub(crate) struct OutputRing {
    capacity: usize,
    bytes: Arc<Mutex<VecDeque<u8>>>,
}

impl OutputRing {
    /// An empty ring keeping at most `capacity` bytes (at least 1).
    pub(crate) fn new(capacity: usize) -> OutputRing {
        let capacity = capacity.max(1);
        OutputRing { capacity, bytes: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))) }
    }

    /// Appends `data`, dropping the oldest bytes past the capacity.
    fn push(&self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let mut ring = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let excess = (ring.len() + data.len()).saturating_sub(self.capacity);
        ring.drain(..excess);
        ring.extend(data);
    }

    /// What the ring holds, oldest byte first.
    pub(crate) fn contents(&self) -> Vec<u8> {
        let ring = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().copied().collect()
    }
}

impl IsTerminal for OutputRing {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputRing {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for OutputRing {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    /// Always the capacity: the permit also sizes `write-zeroes`' allocation, so it stays small.
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(self.capacity)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputRing {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for OutputRing {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_bytes_and_takes_every_write() {
        let mut ring = OutputRing::new(8);
        for chunk in [&b"abc"[..], b"defgh", b"ij"] {
            assert_eq!(ring.check_write().unwrap(), 8, "always writable");
            ring.write(Bytes::copy_from_slice(chunk)).unwrap();
        }
        assert_eq!(ring.contents(), b"cdefghij");
        ring.write(Bytes::from(vec![b'x'; 100])).unwrap();
        assert_eq!(ring.contents(), b"xxxxxxxx", "a write larger than the ring keeps its tail");
        ring.flush().unwrap();
    }
}
