//! Plumbing shared by both directions: full reads, and a bounded hand-over between two threads
//! with buffer reuse.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes read (and handed between threads) per step.
pub const BLOCK: usize = 1 << 20;
/// Blocks in flight between two threads: enough to ride out scheduling hiccups, few enough
/// that the peak memory stays at a handful of MiB.
pub const DEPTH: usize = 4;

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One direction of a bounded hand-over, plus the way back for emptied buffers.
pub struct Link {
    pub tx: SyncSender<Vec<u8>>,
    pub rx: Receiver<Vec<u8>>,
}

/// The other end of a [`Link`].
pub struct LinkEnd {
    pub rx: Receiver<Vec<u8>>,
    pub back: SyncSender<Vec<u8>>,
}

/// A bounded queue of full buffers one way and of empty ones back.
pub fn link() -> (Link, LinkEnd) {
    let (tx, rx) = sync_channel(DEPTH);
    // At most every buffer in flight comes back, so this never blocks in practice.
    let (back, back_rx) = sync_channel(2 * DEPTH + 2);
    (Link { tx, rx: back_rx }, LinkEnd { rx, back })
}

impl Link {
    /// An emptied buffer to refill, or a new one.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(capacity),
        }
    }

    /// Hands `buf` on; `false` if the receiving thread has stopped (it reports why).
    pub fn send(&self, buf: Vec<u8>) -> bool {
        self.tx.send(buf).is_ok()
    }
}

impl LinkEnd {
    /// Gives an emptied buffer back for reuse. Not wiped: the same few buffers carry every
    /// block (so freed memory holds at most a few MiB of old data), and the plaintext goes to
    /// the output anyway; wiping would cost a memset of every byte, twice.
    pub fn recycle(&self, buf: Vec<u8>) {
        let _ = self.back.try_send(buf);
    }
}
