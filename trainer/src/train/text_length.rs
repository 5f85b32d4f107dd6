//! Whether a text corpus is long enough for `data.seq_len` in each of its parts, said with the
//! file and the numbers, before the split's arithmetic reports it in its own terms.

use std::path::Path;

use super::config::DataSection;
use crate::error::{Error, Result};

/// The text read from `source` must fill one `seq_len + 1` window in its training, validation
/// and test parts (as `char_splits` cuts them).
pub fn check(source: &Path, text: &str, d: &DataSection) -> Result<()> {
    let n = text.chars().count();
    let fail = |problem: String| Error::Data {
        path: source.to_path_buf(),
        problem,
        hint: "give a longer text, or a smaller data.seq_len".into(),
    };
    if n == 0 {
        return Err(fail("the text is empty (0 characters)".into()));
    }
    let n_test = (d.test_fraction * n as f64).round() as usize;
    let n_val = (d.val_fraction * n as f64).round() as usize;
    let n_train = n.saturating_sub(n_test + n_val);
    let window = d.seq_len as usize + 1;
    let parts = [("training", n_train), ("validation", n_val), ("test", n_test)];
    if let Some((part, len)) = parts.iter().find(|(_, len)| *len < window) {
        return Err(fail(format!(
            "{n} characters: too short for data.seq_len = {}: its {part} part has {len} characters, \
             one sequence needs seq_len + 1 = {window}",
            d.seq_len
        )));
    }
    Ok(())
}
