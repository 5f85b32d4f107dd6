//! How a text corpus's bytes become characters: UTF-8, strictly (a byte that is not UTF-8 is an
//! error naming the file and its offset, not a silent U+FFFD that the model then learns), or
//! Latin-1 (ISO-8859-1: every byte is the character of that code point) when the option says so.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `data.encoding` of a text dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextEncoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "latin-1")]
    Latin1,
}

/// `bytes` of the file `path` as text in `encoding`.
pub fn decode_text(path: &Path, bytes: Vec<u8>, encoding: TextEncoding) -> Result<String> {
    match encoding {
        TextEncoding::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        TextEncoding::Utf8 => String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            let byte = e.as_bytes()[offset];
            Error::Data {
                path: path.to_path_buf(),
                problem: format!("not UTF-8: byte {byte:#04x} at offset {offset} starts no UTF-8 character"),
                hint: "convert the file to UTF-8, or set data.encoding = \"latin-1\" if it is Latin-1 (ISO-8859-1)"
                    .into(),
            }
        }),
    }
}
