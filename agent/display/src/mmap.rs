//! Shared memory mappings of framebuffers and files, and the dma-buf access
//! bracket. The only place besides the ioctl modules that uses `unsafe`;
//! capture and the banner map through here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;

use rustix::ioctl::{Setter, ioctl, opcode};
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};

/// A `MAP_SHARED` mapping of `len` bytes, unmapped on drop.
///
/// Another process (the application drawing the screen, or the writer of a
/// raw file) may change these bytes at any time. We only ever read them as
/// plain bytes, for which every value is valid; a read racing a write sees a
/// torn frame, which the next capture corrects. This is the usual contract of
/// shared framebuffer mappings (as in every VNC server and memmap-style crate).
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain shared memory owned by this value; moving it to
// another thread moves the only handle to it.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` at `offset` (a multiple of the page size).
    pub fn new(fd: BorrowedFd<'_>, offset: u64, len: usize, writable: bool) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map 0 bytes",
            ));
        }
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a null hint lets the kernel choose a fresh address range, so
        // no existing Rust object is aliased; `fd` is a valid open descriptor
        // for the call's duration; failures are returned, not assumed away.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                prot,
                MapFlags::SHARED,
                fd,
                offset,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(Self { ptr, len, writable })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Never: a mapping has at least one byte ([`Mapping::new`] refuses 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` mapped, readable bytes that stay mapped
        // until `self` drops, which the returned borrow outlives not. Any byte
        // value is valid for `u8`; concurrent writes by other processes are the
        // documented contract of this type (see the type docs).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes for writing; `None` for a read-only mapping.
    pub fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        if !self.writable {
            return None;
        }
        // SAFETY: as in `bytes`, and the mapping was made with PROT_WRITE; the
        // exclusive borrow of `self` ensures no other slice of ours aliases it.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no borrow of
        // the bytes can outlive `self`. An error cannot be acted upon here.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `struct dma_buf_sync` from `<linux/dma-buf.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct DmaBufSync {
    flags: u64,
}

const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_WRITE: u64 = 2;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;
/// `DMA_BUF_IOCTL_SYNC = _IOW('b', 0, struct dma_buf_sync)`.
const DMA_BUF_IOCTL_SYNC: rustix::ioctl::Opcode = opcode::write::<DmaBufSync>(b'b', 0);

fn dma_buf_sync(fd: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    // SAFETY: the opcode is DMA_BUF_IOCTL_SYNC and its argument is the
    // `struct dma_buf_sync` the kernel reads (one u64, repr(C)).
    let op = unsafe { Setter::<DMA_BUF_IOCTL_SYNC, DmaBufSync>::new(DmaBufSync { flags }) };
    // SAFETY: the kernel only reads the argument; `fd` is open for the call.
    unsafe { ioctl(fd, op) }?;
    Ok(())
}

/// Brackets CPU access to a dma-buf mapping (DMA_BUF_IOCTL_SYNC start/end),
/// so caches are coherent with the GPU and display. Ends the access on drop.
#[derive(Debug)]
pub struct SyncGuard<'a> {
    fd: BorrowedFd<'a>,
    flags: u64,
}

impl<'a> SyncGuard<'a> {
    pub fn start(fd: BorrowedFd<'a>, write: bool) -> io::Result<Self> {
        let flags = if write {
            DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE
        } else {
            DMA_BUF_SYNC_READ
        };
        dma_buf_sync(fd.as_fd(), flags | DMA_BUF_SYNC_START)?;
        Ok(Self { fd, flags })
    }
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        // Nothing to do on failure: the access is over either way.
        let _ = dma_buf_sync(self.fd, self.flags | DMA_BUF_SYNC_END);
    }
}
