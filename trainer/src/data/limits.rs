//! What an image file may ask of the decoder: its size read from the header (a few bytes of a
//! PNG, the markers of a JPEG up to its frame header) and checked against a pixel limit before
//! anything is allocated, as Pillow's `MAX_IMAGE_PIXELS` does. A 2 KB JPEG whose header claims
//! 60000 x 60000 is a bad file, not a 10.8 GB allocation that aborts the process.

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// Pillow's `MAX_IMAGE_PIXELS` (about 179 megapixels; ImageNet's largest image has 36).
pub const MAX_IMAGE_PIXELS: u64 = 178_956_970;

const HINT: &str = "replace or delete the file, raise data.max_image_pixels, or set data.on_bad_file = \"skip\"";

/// A bad image file: not readable, not a regular file, no header, or too many pixels.
fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        problem: problem.into(),
        hint: HINT.into(),
    }
}

/// Reads `path`'s header alone (no pixel data) and checks it: a regular file (not a dangling or
/// looping link, not a folder with an image's name), a PNG or JPEG header, at most `max_pixels`.
pub fn check_header(path: &Path, max_pixels: u64) -> Result<(u64, u64)> {
    let meta = fs::metadata(path).map_err(|e| bad(path, format!("not readable: {e}")))?;
    if !meta.is_file() {
        return Err(bad(path, "not a regular file"));
    }
    let file = fs::File::open(path).map_err(|e| bad(path, format!("not readable: {e}")))?;
    let size = dimensions(BufReader::with_capacity(4096, file))
        .map_err(|e| bad(path, format!("not a decodable image: {e}")))?;
    check_pixels(path, size, max_pixels)?;
    Ok(size)
}

/// The size in `bytes`' header (a file already read), checked against `max_pixels`.
pub fn check_bytes(path: &Path, bytes: &[u8], max_pixels: u64) -> Result<(u64, u64)> {
    let size = dimensions(bytes).map_err(|e| bad(path, format!("not a decodable image: {e}")))?;
    check_pixels(path, size, max_pixels)?;
    Ok(size)
}

fn check_pixels(path: &Path, (w, h): (u64, u64), max_pixels: u64) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(bad(path, format!("a header of {w} x {h} pixels (an empty image)")));
    }
    if w.saturating_mul(h) > max_pixels {
        return Err(bad(
            path,
            format!(
                "its header claims {w} x {h} = {} pixels, over data.max_image_pixels = {max_pixels}",
                w.saturating_mul(h)
            ),
        ));
    }
    Ok(())
}

/// (width, height) from a PNG's IHDR or a JPEG's frame header (SOFn); the error says what the
/// header lacks.
fn dimensions(mut r: impl Read) -> std::result::Result<(u64, u64), String> {
    let mut magic = [0u8; 2];
    r.read_exact(&mut magic)
        .map_err(|_| "an empty or 1-byte file".to_string())?;
    match magic {
        [0x89, b'P'] => png_dimensions(r),
        [0xFF, 0xD8] => jpeg_dimensions(r),
        _ => Err(format!(
            "not a JPEG or PNG file (it starts with {:02x} {:02x})",
            magic[0], magic[1]
        )),
    }
}

fn png_dimensions(mut r: impl Read) -> std::result::Result<(u64, u64), String> {
    // The rest of the signature (6 bytes), IHDR's length and type (8), width and height (8).
    let mut head = [0u8; 22];
    r.read_exact(&mut head)
        .map_err(|_| "a PNG cut off before its header".to_string())?;
    if &head[..6] != b"NG\r\n\x1a\n" || &head[10..14] != b"IHDR" {
        return Err("a PNG without its IHDR header".into());
    }
    let be = |b: &[u8]| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    Ok((be(&head[14..18]), be(&head[18..22])))
}

fn jpeg_dimensions(mut r: impl Read) -> std::result::Result<(u64, u64), String> {
    let cut = |_| "a JPEG cut off before its frame header".to_string();
    let mut byte = [0u8; 1];
    loop {
        r.read_exact(&mut byte).map_err(cut)?;
        if byte[0] != 0xFF {
            return Err(format!("a JPEG with a stray byte {:02x} between its segments", byte[0]));
        }
        // Fill bytes: any number of FF before the marker.
        while byte[0] == 0xFF {
            r.read_exact(&mut byte).map_err(cut)?;
        }
        let marker = byte[0];
        if matches!(marker, 0x01 | 0xD0..=0xD8) {
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            return Err("a JPEG whose scan comes before any frame header".into());
        }
        let mut len = [0u8; 2];
        r.read_exact(&mut len).map_err(cut)?;
        let len = u64::from(u16::from_be_bytes(len));
        if len < 2 {
            return Err(format!("a JPEG segment of length {len}"));
        }
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame {
            let mut frame = [0u8; 5];
            r.read_exact(&mut frame).map_err(cut)?;
            let height = u64::from(u16::from_be_bytes([frame[1], frame[2]]));
            let width = u64::from(u16::from_be_bytes([frame[3], frame[4]]));
            return Ok((width, height));
        }
        let skipped = io::copy(&mut r.by_ref().take(len - 2), &mut io::sink()).map_err(|e| e.to_string())?;
        if skipped < len - 2 {
            return Err("a JPEG cut off before its frame header".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dimensions;

    #[test]
    fn headers_give_the_size_without_the_pixels() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend(60000u32.to_be_bytes());
        png.extend(7u32.to_be_bytes());
        assert_eq!(dimensions(&png[..]), Ok((60000, 7)));
        // SOI, an APP0 segment of 4 bytes, then SOF0: precision 8, height 300, width 400.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xFF, 0xC0, 0, 11, 8, 1, 44, 1, 144, 3,
        ];
        assert_eq!(dimensions(&jpeg[..]), Ok((400, 300)));
        assert!(dimensions(&jpeg[..8]).unwrap_err().contains("cut off"));
        assert!(dimensions(&b"GIF89a"[..]).unwrap_err().contains("not a JPEG or PNG"));
    }
}
