//! The kernel entry points of a cubin, read from its ELF symbol table: global functions marked
//! STO_CUDA_ENTRY (`st_other` bit 0x10), which is how ptxas marks `__global__` functions. Used to
//! check NVRTC's output and the disk cache's entries before they are loaded.

const SHT_SYMTAB: u32 = 2;
const STT_FUNC: u8 = 2;
const STB_GLOBAL: u8 = 1;
const STO_CUDA_ENTRY: u8 = 0x10;

fn bytes<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], String> {
    data.get(at..at + N).and_then(|s| s.try_into().ok()).ok_or_else(|| {
        format!(
            "truncated ELF: {N} bytes at offset {at} past its end ({} bytes)",
            data.len()
        )
    })
}
fn u16_at(data: &[u8], at: usize) -> Result<usize, String> {
    Ok(u16::from_le_bytes(bytes(data, at)?) as usize)
}
fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    Ok(u32::from_le_bytes(bytes(data, at)?))
}
fn u64_at(data: &[u8], at: usize) -> Result<usize, String> {
    usize::try_from(u64::from_le_bytes(bytes(data, at)?)).map_err(|e| e.to_string())
}

/// A NUL-terminated name at `at` in `data`.
fn c_str(data: &[u8], at: usize) -> Result<String, String> {
    let rest = data
        .get(at..)
        .ok_or_else(|| format!("ELF string offset {at} out of range"))?;
    let end = rest.iter().position(|&b| b == 0).ok_or("unterminated ELF string")?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// The names of the kernel entry points of a 64-bit little-endian cubin, or what is wrong with it.
pub(crate) fn entry_points(data: &[u8]) -> Result<Vec<String>, String> {
    if data.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a 64-bit little-endian ELF image (a cubin)".into());
    }
    let (shoff, shentsize, shnum) = (u64_at(data, 0x28)?, u16_at(data, 0x3a)?, u16_at(data, 0x3c)?);
    let mut names = Vec::new();
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        if u32_at(data, sh + 4)? != SHT_SYMTAB {
            continue;
        }
        let (offset, size, link, entsize) = (
            u64_at(data, sh + 0x18)?,
            u64_at(data, sh + 0x20)?,
            u32_at(data, sh + 0x28)? as usize,
            u64_at(data, sh + 0x38)?.max(24),
        );
        let strtab = u64_at(data, shoff + link * shentsize + 0x18)?;
        for sym in (offset..offset + size).step_by(entsize) {
            let [info, other] = bytes::<2>(data, sym + 4)?;
            if info & 0xf == STT_FUNC && info >> 4 == STB_GLOBAL && other & STO_CUDA_ENTRY != 0 {
                names.push(c_str(data, strtab + u32_at(data, sym)? as usize)?);
            }
        }
    }
    Ok(names)
}

/// The entry points of [`super::Kernel::ALL`] that `cubin` lacks (all of them when it is no cubin).
pub(crate) fn missing_entries(cubin: &[u8]) -> Result<Vec<&'static str>, String> {
    let found = entry_points(cubin)?;
    Ok(super::Kernel::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| !found.iter().any(|f| f == n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_cubin() {
        assert!(entry_points(b"").is_err());
        assert!(entry_points(b"\x7fELF\x01\x01 32-bit").is_err());
        // A header that points its section table past the end.
        let mut header = b"\x7fELF\x02\x01".to_vec();
        header.resize(64, 0);
        header[0x28] = 0xff;
        header[0x3c] = 1;
        assert!(entry_points(&header).unwrap_err().contains("truncated"));
    }
}
