//! Tensor arguments staged for an emulated launch: each in its own mapping that ends (or starts)
//! at an inaccessible guard page, inputs read-only, outputs poisoned, so that an access one
//! element out of bounds faults at once and an element a kernel forgets to write shows.

use std::ffi::CString;

use enlighten::cuda::executor::{Access, TensorArg};
use enlighten::{Error, Result};

use super::ffi::Region;

/// Which side of a staged tensor the guard page is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    After,
    Before,
}

/// Staged copies keep the original pointer's address modulo this, so the host's alignment
/// decisions (16-byte packs) stay true for the copy.
const ALIGN: usize = 16;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// One anonymous mapping: `pages` pages, the guard page among them inaccessible.
struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::Value {
                arg: "emulator staging",
                expected: format!("{len} bytes of memory"),
                got: "mmap failed".into(),
            });
        }
        Ok(Mapping { base: base.cast(), len })
    }

    fn protect(&self, offset: usize, len: usize, prot: libc::c_int) {
        // SAFETY: the range lies inside this mapping and is page-aligned (callers pass pages).
        let rc = unsafe { libc::mprotect(self.base.add(offset).cast(), len, prot) };
        assert_eq!(rc, 0, "mprotect of the emulator's own mapping failed");
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// A tensor argument's staged copy.
pub struct Staged {
    pub arg: TensorArg,
    name: CString,
    map: Mapping,
    /// The copy's bytes are map[data .. data + bytes]; the guard page is [guard, guard + page).
    data: usize,
    bytes: usize,
    guard: usize,
    /// The accessible bytes before and after the copy (alignment and page rounding): poisoned
    /// before a run and checked after it, so writes there are caught as out of bounds.
    slack: [std::ops::Range<usize>; 2],
    read_only: bool,
    /// Whether the tensor's bytes have been copied in (a read-only copy is then protected).
    loaded: bool,
}

impl Staged {
    pub fn new(arg: TensorArg, placement: Placement) -> Result<Staged> {
        let page = page_size();
        let bytes = arg.tensor.numel() * arg.tensor.kind().elt_size_in_bytes();
        let phase = arg.tensor.data_ptr() as usize % ALIGN;
        let data_pages = (bytes + 2 * ALIGN).div_ceil(page);
        let map = Mapping::new((data_pages + 1) * page)?;
        let (data, guard, accessible) = match placement {
            Placement::After => {
                let guard = data_pages * page;
                let end = guard - bytes;
                (end - (end + ALIGN - phase) % ALIGN, guard, 0..guard)
            }
            Placement::Before => (page + phase, 0, page..(data_pages + 1) * page),
        };
        map.protect(guard, page, libc::PROT_NONE);
        let name = CString::new(arg.name).unwrap_or_default();
        let read_only = arg.access == Access::Read;
        let slack = [accessible.start..data, data + bytes..accessible.end];
        let mut staged = Staged {
            arg,
            name,
            map,
            data,
            bytes,
            guard,
            slack,
            read_only,
            loaded: false,
        };
        if read_only {
            staged.load();
            staged.map.protect(accessible.start, accessible.len(), libc::PROT_READ);
        }
        Ok(staged)
    }

    /// The address the kernel gets.
    pub fn ptr(&self) -> u64 {
        self.map.base as u64 + self.data as u64
    }

    pub fn writable(&self) -> bool {
        !self.read_only
    }

    /// The region the emulator names faults against.
    pub fn region(&self) -> Region {
        let base = self.map.base as u64;
        Region {
            name: self.name.as_ptr(),
            data_lo: self.ptr(),
            data_hi: self.ptr() + self.bytes as u64,
            map_lo: base,
            map_hi: base + self.map.len as u64,
            elem_size: self.arg.tensor.kind().elt_size_in_bytes() as u32,
            writable: self.writable() as u32,
        }
    }

    /// The start of `range` in the mapping, which must avoid the guard page.
    fn at(&self, range: &std::ops::Range<usize>) -> *mut u8 {
        let page = page_size();
        assert!(range.end <= self.map.len && (range.end <= self.guard || range.start >= self.guard + page));
        // SAFETY: in bounds of the mapping (asserted).
        unsafe { self.map.base.add(range.start) }
    }

    fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        // SAFETY: the range lies inside the mapping, outside the guard page; every page but the
        // guard is readable.
        unsafe { std::slice::from_raw_parts(self.at(&range), range.len()) }
    }

    fn bytes_mut(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
        assert!(
            !self.read_only || !self.loaded,
            "a read-only copy is written only before it is protected"
        );
        // SAFETY: as in `bytes`; the pages are writable (not yet protected, or not read-only).
        unsafe { std::slice::from_raw_parts_mut(self.at(&range), range.len()) }
    }

    fn copy_range(&self) -> std::ops::Range<usize> {
        self.data..self.data + self.bytes
    }

    fn tensor_bytes(&self) -> &[u8] {
        // SAFETY: the tensor is a contiguous CPU tensor (checked by the launch) of `bytes` bytes,
        // kept alive by `arg`.
        unsafe { std::slice::from_raw_parts(self.arg.tensor.data_ptr() as *const u8, self.bytes) }
    }

    fn load(&mut self) {
        let src = self.tensor_bytes().to_vec();
        let range = self.copy_range();
        self.bytes_mut(range).copy_from_slice(&src);
        self.loaded = true;
    }

    /// Before each run: outputs poisoned, in-out tensors from their contents, slack poisoned.
    pub fn prepare(&mut self, poison: u8) {
        if self.read_only {
            return;
        }
        match self.arg.access {
            Access::Write => {
                let range = self.copy_range();
                self.bytes_mut(range).fill(poison);
            }
            _ => self.load(),
        }
        for r in self.slack.clone() {
            self.bytes_mut(r).fill(poison);
        }
    }

    /// After a run: a kernel that wrote into the slack wrote out of bounds.
    pub fn check_slack(&self, poison: u8) -> std::result::Result<(), String> {
        if self.read_only {
            return Ok(());
        }
        let [before, after] = &self.slack;
        if let Some(at) = self.bytes(before.clone()).iter().rposition(|&b| b != poison) {
            return Err(format!(
                "wrote {} bytes before the start of `{}`",
                before.len() - at,
                self.arg.name
            ));
        }
        if let Some(at) = self.bytes(after.clone()).iter().position(|&b| b != poison) {
            let es = self.arg.tensor.kind().elt_size_in_bytes();
            return Err(format!(
                "wrote past the end of `{}`: element {}, and it has {}",
                self.arg.name,
                (self.bytes + at) / es,
                self.bytes / es
            ));
        }
        Ok(())
    }

    /// The copy's current bytes.
    pub fn contents(&self) -> Vec<u8> {
        self.bytes(self.copy_range()).to_vec()
    }

    /// Writes the copy back into the tensor.
    pub fn store(&self) {
        let src = self.contents();
        // SAFETY: as in `tensor_bytes`; the launch holds the only use of this tensor's storage
        // while it runs (writable arguments may not overlap others).
        let dst = unsafe { std::slice::from_raw_parts_mut(self.arg.tensor.data_ptr() as *mut u8, self.bytes) };
        dst.copy_from_slice(&src);
    }
}
