//! Python's `str()` and `repr()` of a JSON value, straight from the JSON text.
//!
//! The guide's server decodes a request with `json.loads`, reads `action` and `value` with
//! `dict.get()` and puts them in an f-string: a string appears as itself, anything else as
//! Python's `repr()` of the decoded value (`None`, `True`, `5`, `1.5`, `[1, 'a']`,
//! `{'k': None}`). This module prints exactly that, for any JSON text:
//!
//! * integers of any size exactly as written (`123456789012345678901234567890`; `-0` is
//!   `0`), other numbers as Python's `float` and its `repr()` (`1e15` is
//!   `1000000000000000.0`, `1e400` is `inf`);
//! * object keys in the order Python's `dict` keeps them: a repeated key keeps the position
//!   of its first occurrence and takes the value of its last, as `json.loads` builds it;
//! * strings with Python's quotes and escapes, lone surrogates (`"\ud800"`) included.
//!
//! ```
//! use sockmsg_demo::pyfmt::PyJson;
//! let doc = PyJson::parse(r#"{"b": [1, 2.5, null, true], "a": "it's", "b": 1e15}"#, 32)?;
//! assert_eq!(doc.root().py_repr(), r#"{'b': 1000000000000000.0, 'a': "it's"}"#);
//! assert_eq!(doc.root().get("a").map(|v| v.py_str()), Some(Ok("it's".to_owned())));
//! # Ok::<(), sockmsg_demo::pyfmt::ParseError>(())
//! ```
//!
//! ## Cost
//!
//! Nothing is built from the text but a short list of the object members Python's `dict`
//! drops or moves (repeated keys). [`PyJson::parse`] reads the text once, and sorts each
//! object's keys in place to find repeats (`O(n log n)` in the worst case, no hashing a
//! peer could aim at); its working memory is 4 bytes per member of the objects open at a
//! time, and what it keeps is 4 bytes per dropped member and 8 per repeated key (all less
//! than the text's own size, since a member takes at least 5 bytes of text). Printing
//! reads the text once more, writes into a [`Sink`] of the caller's choice and stops as soon
//! as the sink is full ([`Preview`] for log lines, a capped buffer for answers), so an
//! answer is never built past its limit.
//!
//! Which characters `repr()` escapes follows the Unicode database of Python 3.11 (Unicode
//! 14.0, `demo/scripts/gen-unprintable.py`): a character assigned in a later Unicode version
//! is escaped here as it is by Python 3.11, and printed raw by a later Python.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::{self, Write as _};

use sockmsg_protocol::json::plain_run_len;

/// Python's `repr(float)` (the protocol's, which its JSON encoder also uses).
pub use sockmsg_protocol::json::py_float_repr as float_repr;

/// Why a text is not one JSON value [`PyJson`] can index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not well-formed JSON; the byte offset where that shows.
    Invalid {
        /// Byte offset in the text.
        offset: usize,
    },
    /// Arrays and objects nested deeper than allowed.
    TooDeep {
        /// The nesting allowed.
        max: usize,
    },
    /// Longer than this index can address (4 GiB).
    TooLong {
        /// The text's length in bytes.
        len: usize,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Invalid { offset } => write!(f, "invalid JSON at byte offset {offset}"),
            ParseError::TooDeep { max } => {
                write!(f, "JSON nested deeper than {max} arrays and objects")
            }
            ParseError::TooLong { len } => {
                write!(f, "JSON text of {len} bytes: more than 4 GiB")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Why printing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// The [`Sink`] is full.
    Full,
    /// `str()` of a string holding a lone surrogate (`"\ud800"`): Python's `str` holds it,
    /// UTF-8 text cannot (Python fails when it encodes such text; so does this).
    LoneSurrogate,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Full => f.write_str("the output is full"),
            FormatError::LoneSurrogate => f.write_str(
                "the text holds a lone surrogate (a \\ud800-\\udfff escape), which UTF-8 cannot encode",
            ),
        }
    }
}

impl std::error::Error for FormatError {}

/// The sink is full: printing stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl From<Full> for FormatError {
    fn from(_: Full) -> FormatError {
        FormatError::Full
    }
}

/// Where printed text goes.
pub trait Sink {
    /// Appends `s`, or refuses it: then nothing more is printed.
    fn put(&mut self, s: &str) -> Result<(), Full>;
}

/// No limit.
impl Sink for String {
    fn put(&mut self, s: &str) -> Result<(), Full> {
        self.push_str(s);
        Ok(())
    }
}

/// The first characters of a text, for a log line: takes up to a number of characters and
/// then reports [`Full`]; [`Preview::finish`] marks a cut with `...`.
///
/// ```
/// use sockmsg_demo::pyfmt::{Preview, Sink};
/// let mut p = Preview::new(5);
/// assert!(p.put("abc").is_ok());
/// assert!(p.put("defgh").is_err());
/// assert_eq!(p.finish(), "abcde...");
/// ```
#[derive(Debug, Clone)]
pub struct Preview {
    out: String,
    left: usize,
    cut: bool,
}

impl Preview {
    /// A preview of at most `max_chars` characters.
    pub fn new(max_chars: usize) -> Preview {
        Preview {
            out: String::new(),
            left: max_chars,
            cut: false,
        }
    }

    /// The text taken, followed by `...` if some was refused.
    pub fn finish(mut self) -> String {
        if self.cut {
            self.out.push_str("...");
        }
        self.out
    }
}

impl Sink for Preview {
    fn put(&mut self, s: &str) -> Result<(), Full> {
        if self.cut {
            return Err(Full);
        }
        match s.char_indices().nth(self.left) {
            None => {
                self.left -= s.chars().count();
                self.out.push_str(s);
                Ok(())
            }
            Some((cut, _)) => {
                self.out.push_str(s.get(..cut).unwrap_or_default());
                self.left = 0;
                self.cut = true;
                Err(Full)
            }
        }
    }
}

/// A JSON text, checked, with what Python's `dict` makes of its repeated keys.
#[derive(Debug, Clone)]
pub struct PyJson<'a> {
    text: &'a str,
    /// Offsets (of the opening quote of the key) of the members a `dict` drops: every
    /// occurrence of a repeated key but the first. Sorted.
    dropped: Vec<u32>,
    /// (first occurrence, last occurrence) of each repeated key: the first's position
    /// shows the last's value. Sorted.
    moved: Vec<(u32, u32)>,
}

/// One value of a [`PyJson`].
#[derive(Debug, Clone, Copy)]
pub struct Value<'j, 'a> {
    doc: &'j PyJson<'a>,
    at: usize,
}

impl<'a> PyJson<'a> {
    /// Checks that `text` is one JSON value (RFC 8259, as serde_json and Python's `json`
    /// read it, surrogate escapes allowed as Python allows them) nested at most `max_depth`
    /// arrays and objects deep, and finds its repeated keys.
    ///
    /// ```
    /// use sockmsg_demo::pyfmt::{ParseError, PyJson};
    /// assert!(PyJson::parse("[1, 2]", 1).is_ok());
    /// assert_eq!(PyJson::parse("[[1]]", 1).err(), Some(ParseError::TooDeep { max: 1 }));
    /// assert_eq!(PyJson::parse("[1,]", 32).err(), Some(ParseError::Invalid { offset: 3 }));
    /// ```
    pub fn parse(text: &'a str, max_depth: usize) -> Result<PyJson<'a>, ParseError> {
        if u32::try_from(text.len()).is_err() {
            return Err(ParseError::TooLong { len: text.len() });
        }
        let mut doc = PyJson {
            text,
            dropped: Vec::new(),
            moved: Vec::new(),
        };
        doc.index(max_depth)?;
        doc.dropped.sort_unstable();
        doc.moved.sort_unstable();
        Ok(doc)
    }

    /// The top-level value.
    pub fn root(&self) -> Value<'_, 'a> {
        Value {
            doc: self,
            at: ws(self.bytes(), 0),
        }
    }

    /// The JSON text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The one pass over the text: checks it and fills `dropped` and `moved`.
    fn index(&mut self, max_depth: usize) -> Result<(), ParseError> {
        let b = self.bytes();
        let invalid = |offset| ParseError::Invalid { offset };
        // Open containers: `None` for an array, `Some(first key)` (index in `keys`) for an
        // object.
        let mut stack: Vec<Option<usize>> = Vec::new();
        // Key offsets of the members of the objects open.
        let mut keys: Vec<u32> = Vec::new();
        let mut i = ws(b, 0);
        loop {
            // A value starts at `i`.
            match b.get(i) {
                Some(&c @ (b'{' | b'[')) => {
                    if stack.len() >= max_depth {
                        return Err(ParseError::TooDeep { max: max_depth });
                    }
                    let close = if c == b'{' { b'}' } else { b']' };
                    i = ws(b, i + 1);
                    if b.get(i) == Some(&close) {
                        i += 1;
                    } else if c == b'{' {
                        stack.push(Some(keys.len()));
                        i = member(b, i, &mut keys).ok_or_else(|| invalid(i))?;
                        continue;
                    } else {
                        stack.push(None);
                        continue;
                    }
                }
                Some(b'"') => i = check_string(b, i).ok_or_else(|| invalid(i))?,
                Some(b'-' | b'0'..=b'9') => i = check_number(b, i).ok_or_else(|| invalid(i))?,
                Some(b't') if b.get(i..i + 4) == Some(b"true") => i += 4,
                Some(b'f') if b.get(i..i + 5) == Some(b"false") => i += 5,
                Some(b'n') if b.get(i..i + 4) == Some(b"null") => i += 4,
                _ => return Err(invalid(i)),
            }
            // A value ended at `i`: close containers, or find the next value.
            loop {
                i = ws(b, i);
                let Some(&top) = stack.last() else {
                    return if i == b.len() {
                        Ok(())
                    } else {
                        Err(invalid(i))
                    };
                };
                match (b.get(i), top) {
                    (Some(b','), None) => {
                        i = ws(b, i + 1);
                        break;
                    }
                    (Some(b','), Some(_)) => {
                        let at = ws(b, i + 1);
                        i = member(b, at, &mut keys).ok_or_else(|| invalid(at))?;
                        break;
                    }
                    (Some(b']'), None) => {
                        stack.pop();
                        i += 1;
                    }
                    (Some(b'}'), Some(first)) => {
                        self.close_object(keys.get_mut(first..).unwrap_or_default());
                        keys.truncate(first);
                        stack.pop();
                        i += 1;
                    }
                    _ => return Err(invalid(i)),
                }
            }
        }
    }

    /// Records the repeated keys among the keys of one object (in text order).
    fn close_object(&mut self, keys: &mut [u32]) {
        if keys.len() < 2 {
            return;
        }
        let b = self.bytes();
        // By key, then by position: each run of equal keys is in text order.
        keys.sort_unstable_by(|&x, &y| cmp_keys(b, x, y).then(x.cmp(&y)));
        let same = |x: &u32, y: &u32| cmp_keys(b, *x, *y) == Ordering::Equal;
        let (mut drop, mut moves) = (0, 0);
        for run in keys.chunk_by(same).filter(|run| run.len() > 1) {
            drop += run.len() - 1;
            moves += 1;
        }
        grow(&mut self.dropped, drop);
        grow(&mut self.moved, moves);
        for run in keys.chunk_by(same) {
            if let [first, rest @ .., last] = run {
                self.moved.push((*first, *last));
                self.dropped.extend(rest);
                self.dropped.push(*last);
            }
        }
    }

    fn is_dropped(&self, key: usize) -> bool {
        u32::try_from(key).is_ok_and(|k| self.dropped.binary_search(&k).is_ok())
    }

    /// The member whose value shows at the first occurrence `key` of a repeated key.
    fn moved_to(&self, key: usize) -> Option<usize> {
        let k = u32::try_from(key).ok()?;
        let at = self
            .moved
            .binary_search_by_key(&k, |&(first, _)| first)
            .ok()?;
        self.moved.get(at).map(|&(_, last)| last as usize)
    }
}

impl<'j, 'a> Value<'j, 'a> {
    fn first(&self) -> Option<u8> {
        self.doc.bytes().get(self.at).copied()
    }

    /// `true` for an object (a Python `dict`).
    pub fn is_object(&self) -> bool {
        self.first() == Some(b'{')
    }

    /// `true` for a string.
    pub fn is_str(&self) -> bool {
        self.first() == Some(b'"')
    }

    /// `true` if this is a string equal to `s` (escapes decoded).
    pub fn str_eq(&self, s: &str) -> bool {
        self.is_str() && Chars::new(self.doc.bytes(), self.at).eq(s.chars().map(u32::from))
    }

    /// Python's `dict.get(key)`: the value of the last member named `key` if this is an
    /// object holding one (`None` for anything else, where Python would fail).
    pub fn get(&self, key: &str) -> Option<Value<'j, 'a>> {
        let [found] = self.get_all([key]);
        found
    }

    /// [`Value::get`] of several keys, in one pass over the object.
    pub fn get_all<const N: usize>(&self, keys: [&str; N]) -> [Option<Value<'j, 'a>>; N] {
        let mut found = [None; N];
        if !self.is_object() {
            return found;
        }
        let b = self.doc.bytes();
        let mut i = ws(b, self.at + 1);
        while b.get(i) == Some(&b'"') {
            let value = value_start(b, i);
            for (key, slot) in keys.iter().zip(found.iter_mut()) {
                if Chars::new(b, i).eq(key.chars().map(u32::from)) {
                    *slot = Some(Value {
                        doc: self.doc,
                        at: value,
                    });
                }
            }
            i = ws(b, skip_value(b, value));
            if b.get(i) != Some(&b',') {
                break;
            }
            i = ws(b, i + 1);
        }
        found
    }

    /// Writes Python's `repr()` of the value to `sink`.
    pub fn write_repr(&self, sink: &mut dyn Sink) -> Result<(), Full> {
        self.doc.repr(self.at, sink).map(|_| ())
    }

    /// Writes Python's `str()` of the value to `sink` (what an f-string shows): a string as
    /// itself, anything else as its `repr()`.
    pub fn write_str(&self, sink: &mut dyn Sink) -> Result<(), FormatError> {
        if self.is_str() {
            write_plain(self.doc.bytes(), self.at, sink)
        } else {
            Ok(self.write_repr(sink)?)
        }
    }

    /// Python's `repr()` of the value.
    pub fn py_repr(&self) -> String {
        let mut out = String::new();
        // A String is never full.
        let _ = self.write_repr(&mut out);
        out
    }

    /// Python's `str()` of the value.
    pub fn py_str(&self) -> Result<String, FormatError> {
        let mut out = String::new();
        self.write_str(&mut out)?;
        Ok(out)
    }
}

/// `str()` of an optional value: `dict.get()` of a missing key gives `None`.
pub fn write_str_opt(value: Option<Value<'_, '_>>, sink: &mut dyn Sink) -> Result<(), FormatError> {
    match value {
        Some(v) => v.write_str(sink),
        None => Ok(sink.put("None")?),
    }
}

impl PyJson<'_> {
    /// Writes `repr()` of the value at `i`; returns where it ends. The text was checked by
    /// `index`, so this only follows its structure (and stops at the end of the text
    /// should it ever not).
    fn repr(&self, i: usize, sink: &mut dyn Sink) -> Result<usize, Full> {
        let b = self.bytes();
        match b.get(i) {
            Some(b'{') => self.repr_object(i, sink),
            Some(b'[') => {
                sink.put("[")?;
                let mut j = ws(b, i + 1);
                if b.get(j) != Some(&b']') {
                    loop {
                        j = ws(b, self.repr(j, sink)?);
                        if b.get(j) != Some(&b',') {
                            break;
                        }
                        sink.put(", ")?;
                        j = ws(b, j + 1);
                    }
                }
                sink.put("]")?;
                Ok(j + 1)
            }
            Some(b'"') => write_str_repr(b, i, sink),
            Some(b't') => sink.put("True").map(|()| i + 4),
            Some(b'f') => sink.put("False").map(|()| i + 5),
            Some(b'n') => sink.put("None").map(|()| i + 4),
            Some(_) => {
                let end = scalar_end(b, i);
                let number = self.text.get(i..end).unwrap_or_default();
                write_number(number, sink)?;
                Ok(end)
            }
            None => Ok(b.len()),
        }
    }

    fn repr_object(&self, i: usize, sink: &mut dyn Sink) -> Result<usize, Full> {
        let b = self.bytes();
        sink.put("{")?;
        // Where the values shown early (moved to a first occurrence) end, by the member
        // they belong to: that member is skipped without reading its value again.
        let mut shown: HashMap<usize, usize> = HashMap::new();
        let mut first = true;
        let mut j = ws(b, i + 1);
        while b.get(j) == Some(&b'"') {
            let key = j;
            let value = value_start(b, key);
            let end = if self.is_dropped(key) {
                match shown.remove(&key) {
                    Some(end) => end,
                    None => skip_value(b, value),
                }
            } else {
                if !first {
                    sink.put(", ")?;
                }
                first = false;
                write_str_repr(b, key, sink)?;
                sink.put(": ")?;
                match self.moved_to(key) {
                    Some(last) => {
                        let end = self.repr(value_start(b, last), sink)?;
                        shown.insert(last, end);
                        skip_value(b, value)
                    }
                    None => self.repr(value, sink)?,
                }
            };
            j = ws(b, end);
            if b.get(j) != Some(&b',') {
                break;
            }
            j = ws(b, j + 1);
        }
        sink.put("}")?;
        Ok(j + 1)
    }
}

/// Makes room for `additional` more items, growing by half (not double) the capacity at
/// least: what the index keeps stays within 1.5 times what it needs.
pub(crate) fn grow<T>(v: &mut Vec<T>, additional: usize) {
    if v.capacity() - v.len() < additional {
        v.reserve_exact(additional.max(v.capacity() / 2).max(16));
    }
}

/// Skips JSON whitespace from `i`.
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Checks `"key"`, `:` at `i`, records the key's offset; returns where the value starts.
fn member(b: &[u8], i: usize, keys: &mut Vec<u32>) -> Option<usize> {
    let after = check_string(b, i)?;
    let colon = ws(b, after);
    if b.get(colon) != Some(&b':') {
        return None;
    }
    grow(keys, 1);
    keys.push(u32::try_from(i).ok()?);
    Some(ws(b, colon + 1))
}

/// Where the value of the member whose key starts at `key` starts (checked text).
fn value_start(b: &[u8], key: usize) -> usize {
    let colon = ws(b, skip_string(b, key));
    ws(b, colon + 1)
}

/// Checks the string whose opening quote is at `i`; returns the index after its closing
/// quote.
fn check_string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut i = i + 1;
    loop {
        i += plain_run_len(b.get(i..)?)?;
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    if !b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            _ => return None,
        }
    }
}

/// Skips the (checked) string whose opening quote is at `i`.
fn skip_string(b: &[u8], i: usize) -> usize {
    let mut i = i + 1;
    loop {
        match b
            .get(i..)
            .and_then(|r| r.iter().position(|&c| c == b'"' || c == b'\\'))
        {
            Some(k) if b.get(i + k) == Some(&b'\\') => i += k + 2,
            Some(k) => return i + k + 1,
            None => return b.len(),
        }
    }
}

/// Checks a number starting at `i` (RFC 8259 grammar); returns the index after it.
fn check_number(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let digits = |mut i: usize| -> Option<usize> {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i)?,
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

/// The end of the number or literal at `i` (checked text).
fn scalar_end(b: &[u8], i: usize) -> usize {
    let rest = b.get(i..).unwrap_or_default();
    i + rest
        .iter()
        .position(|&c| matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(rest.len())
}

/// Skips the (checked) value at `i`; returns the index after it.
fn skip_value(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => skip_string(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                let rest = b.get(j..).unwrap_or_default();
                let Some(k) = rest
                    .iter()
                    .position(|&c| matches!(c, b'"' | b'{' | b'[' | b'}' | b']'))
                else {
                    return b.len();
                };
                j += k;
                match b.get(j) {
                    Some(b'"') => j = skip_string(b, j),
                    Some(b'{' | b'[') => {
                        depth += 1;
                        j += 1;
                    }
                    _ => {
                        depth = depth.saturating_sub(1);
                        j += 1;
                        if depth == 0 {
                            return j;
                        }
                    }
                }
            }
        }
        Some(_) => scalar_end(b, i),
        None => b.len(),
    }
}

/// The decoded characters of the (checked) string whose opening quote is at `i`, as code
/// points, lone surrogates included (as Python's `json` decodes them).
struct Chars<'b> {
    b: &'b [u8],
    i: usize,
}

impl<'b> Chars<'b> {
    fn new(b: &'b [u8], quote: usize) -> Chars<'b> {
        Chars { b, i: quote + 1 }
    }

    /// Where the iteration is (after the closing quote once done).
    fn pos(&self) -> usize {
        self.i
    }
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = std::str::from_utf8(b.get(i..i + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

impl Iterator for Chars<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let b = self.b;
        let c = *b.get(self.i)?;
        match c {
            b'"' => {
                self.i += 1;
                self.b = &[];
                None
            }
            b'\\' => {
                let e = *b.get(self.i + 1)?;
                self.i += 2;
                Some(match e {
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => 0x0a,
                    b'r' => 0x0d,
                    b't' => 0x09,
                    b'u' => {
                        let hi = hex4(b, self.i)?;
                        self.i += 4;
                        if (0xd800..0xdc00).contains(&hi)
                            && b.get(self.i..self.i + 2) == Some(b"\\u")
                        {
                            if let Some(lo) =
                                hex4(b, self.i + 2).filter(|lo| (0xdc00..0xe000).contains(lo))
                            {
                                self.i += 6;
                                return Some(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00));
                            }
                        }
                        hi
                    }
                    other => u32::from(other),
                })
            }
            c if c < 0x80 => {
                self.i += 1;
                Some(u32::from(c))
            }
            _ => {
                // Checked UTF-8: the text came from a `str`.
                let rest = b.get(self.i..self.i + 4.min(b.len() - self.i))?;
                let valid = match std::str::from_utf8(rest) {
                    Ok(s) => s,
                    Err(e) => std::str::from_utf8(rest.get(..e.valid_up_to())?).ok()?,
                };
                let ch = valid.chars().next()?;
                self.i += ch.len_utf8();
                Some(u32::from(ch))
            }
        }
    }
}

/// Orders keys (opening quotes at `x`, `y`) by their decoded text: equal exactly when
/// Python's `dict` sees one key. Raw bytes are compared as long as neither key shows an
/// escape (UTF-8 orders as code points do); the decoded characters from there.
fn cmp_keys(b: &[u8], x: u32, y: u32) -> Ordering {
    let (x, y) = (x as usize, y as usize);
    let (mut i, mut j) = (x + 1, y + 1);
    loop {
        let c = b.get(i).copied().unwrap_or(b'"');
        let d = b.get(j).copied().unwrap_or(b'"');
        if c == b'\\' || d == b'\\' {
            return Chars::new(b, x).cmp(Chars::new(b, y));
        }
        match (c == b'"', d == b'"') {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) if c != d => return c.cmp(&d),
            _ => {}
        }
        i += 1;
        j += 1;
    }
}

/// Writes a number as Python prints what `json.loads` makes of it: an integer (any size)
/// as written, `-0` as `0`; anything with a fraction or exponent as `repr(float(text))`.
fn write_number(text: &str, sink: &mut dyn Sink) -> Result<(), Full> {
    if !text.contains(['.', 'e', 'E']) {
        return sink.put(if text == "-0" { "0" } else { text });
    }
    let mut buf = Buf::default();
    if short_float_repr(text, &mut buf) {
        return sink.put(buf.as_str());
    }
    let x: f64 = text.parse().unwrap_or(f64::NAN);
    sink.put(&float_repr(x))
}

/// A small text buffer on the stack (what does not fit is dropped; callers stay far
/// below its size).
struct Buf {
    bytes: [u8; 48],
    len: usize,
}

impl Default for Buf {
    fn default() -> Buf {
        Buf {
            bytes: [0; 48],
            len: 0,
        }
    }
}

impl Buf {
    fn push(&mut self, c: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = c;
            self.len += 1;
        }
    }

    fn extend(&mut self, s: &[u8]) {
        s.iter().for_each(|&c| self.push(c));
    }

    fn as_str(&self) -> &str {
        self.bytes
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

/// Python's `repr(float(text))` of a JSON number with a fraction or an exponent, without
/// going through binary: when it has at most 15 significant digits and lies within the
/// normal range (1e-307 to 1e308), those digits are the shortest that round-trip (two
/// decimals of 15 digits never make the same double), so only Python's layout remains:
/// positional for decimal exponents -4 to 15, else `d.ddde+XX`. `false` when the number
/// is outside that case (the caller then converts).
fn short_float_repr(text: &str, out: &mut Buf) -> bool {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match unsigned.find(['e', 'E']) {
        Some(at) => (
            unsigned.get(..at).unwrap_or_default(),
            unsigned.get(at + 1..).unwrap_or_default(),
        ),
        None => (unsigned, "0"),
    };
    let Ok(exp) = exp.strip_prefix('+').unwrap_or(exp).parse::<i32>() else {
        return false; // beyond i32: far outside the normal range
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // Significant digits: without leading and trailing zeros.
    let all = || int.bytes().chain(frac.bytes());
    let lead = all().take_while(|&c| c == b'0').count();
    let total = int.len() + frac.len();
    let trail = all().rev().take_while(|&c| c == b'0').count();
    if lead == total {
        out.extend(if negative { b"-0.0" } else { b"0.0" });
        return true;
    }
    let digits = total - lead - trail;
    if digits > 15 {
        return false;
    }
    // Decimal exponent of the first significant digit.
    let Some(e) = i32::try_from(int.len())
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|n| n.checked_sub(i32::try_from(lead).ok()?))
        .and_then(|n| n.checked_add(exp))
    else {
        return false;
    };
    if !(-307..=307).contains(&e) {
        return false;
    }
    let mut d = [0u8; 15];
    for (slot, c) in d.iter_mut().zip(all().skip(lead).take(digits)) {
        *slot = c;
    }
    let d = d.get(..digits).unwrap_or_default();
    if negative {
        out.push(b'-');
    }
    if (-4..16).contains(&e) {
        if e >= 0 {
            let int_len = e as usize + 1;
            for k in 0..int_len {
                out.push(d.get(k).copied().unwrap_or(b'0'));
            }
            out.push(b'.');
            match d.get(int_len..) {
                Some(rest) if !rest.is_empty() => out.extend(rest),
                _ => out.push(b'0'),
            }
        } else {
            out.extend(b"0.");
            for _ in 0..(-e - 1) {
                out.push(b'0');
            }
            out.extend(d);
        }
    } else {
        out.extend(d.get(..1).unwrap_or_default());
        if let Some(rest) = d.get(1..).filter(|r| !r.is_empty()) {
            out.push(b'.');
            out.extend(rest);
        }
        out.push(b'e');
        out.push(if e < 0 { b'-' } else { b'+' });
        let a = e.unsigned_abs();
        if a < 10 {
            out.push(b'0');
        }
        let mut tmp = Buf::default();
        let mut a = a;
        loop {
            tmp.push(b'0' + (a % 10) as u8);
            a /= 10;
            if a == 0 {
                break;
            }
        }
        for k in (0..tmp.len).rev() {
            out.push(tmp.bytes.get(k).copied().unwrap_or(b'0'));
        }
    }
    true
}

/// Python's choice of quote for `repr()` of a string: `"` if it holds `'` and no `"`.
fn repr_quote(b: &[u8], i: usize) -> char {
    let (mut single, mut double) = (false, false);
    for c in Chars::new(b, i) {
        single |= c == u32::from('\'');
        double |= c == u32::from('"');
    }
    if single && !double {
        '"'
    } else {
        '\''
    }
}

/// Writes `repr()` of the (checked) string at `i`; returns where it ends.
fn write_str_repr(b: &[u8], i: usize, sink: &mut dyn Sink) -> Result<usize, Full> {
    // Printable ASCII without quotes or escapes (most keys and strings): as it is, in `'`.
    let content = b.get(i + 1..).unwrap_or_default();
    let plain = content
        .iter()
        .position(|&c| !(0x20..0x7f).contains(&c) || c == b'\\' || c == b'"' || c == b'\'');
    if let Some(n) = plain.filter(|&n| content.get(n) == Some(&b'"')) {
        sink.put("'")?;
        put_bytes(b, i + 1, i + 1 + n, sink)?;
        sink.put("'")?;
        return Ok(i + n + 2);
    }
    let quote = repr_quote(b, i);
    let mut q = [0u8; 4];
    let q = &*quote.encode_utf8(&mut q);
    sink.put(q)?;
    let mut chars = Chars::new(b, i);
    let mut run_start = chars.pos();
    loop {
        // Plain printable ASCII (not the quote, not a backslash) goes out as a slice.
        let plain = b
            .get(chars.pos()..)
            .unwrap_or_default()
            .iter()
            .position(|&c| !(0x20..0x7f).contains(&c) || c == b'\\' || c == b'"' || c == b'\'')
            .unwrap_or(0);
        chars.i += plain;
        if chars.pos() > run_start {
            put_bytes(b, run_start, chars.pos(), sink)?;
        }
        let Some(c) = chars.next() else { break };
        write_repr_char(c, quote, sink)?;
        run_start = chars.pos();
    }
    sink.put(q)?;
    Ok(chars.pos())
}

/// Writes `b[from..to]`, known to be text.
fn put_bytes(b: &[u8], from: usize, to: usize, sink: &mut dyn Sink) -> Result<(), Full> {
    sink.put(
        b.get(from..to)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or_default(),
    )
}

/// One character of `repr()` of a string quoted with `quote`.
pub(crate) fn write_repr_char(c: u32, quote: char, sink: &mut dyn Sink) -> Result<(), Full> {
    let mut tmp = [0u8; 4];
    match char::from_u32(c) {
        Some('\\') => sink.put("\\\\"),
        Some('\t') => sink.put("\\t"),
        Some('\n') => sink.put("\\n"),
        Some('\r') => sink.put("\\r"),
        Some(ch) if ch == quote => {
            sink.put("\\")?;
            sink.put(ch.encode_utf8(&mut tmp))
        }
        Some(ch) if is_printable(ch) => sink.put(ch.encode_utf8(&mut tmp)),
        // Non-printable, or a lone surrogate: \xNN, \uNNNN or \UNNNNNNNN.
        _ => {
            let (prefix, digits) = if c <= 0xff {
                ("\\x", 2)
            } else if c <= 0xffff {
                ("\\u", 4)
            } else {
                ("\\U", 8)
            };
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut buf = Buf::default();
            buf.extend(prefix.as_bytes());
            for k in (0..digits).rev() {
                buf.push(
                    HEX.get(((c >> (4 * k)) & 0xf) as usize)
                        .copied()
                        .unwrap_or(b'0'),
                );
            }
            sink.put(buf.as_str())
        }
    }
}

/// Writes the decoded text of the (checked) string at `i` (Python's `str()` of it).
fn write_plain(b: &[u8], i: usize, sink: &mut dyn Sink) -> Result<(), FormatError> {
    let mut chars = Chars::new(b, i);
    loop {
        let plain = b
            .get(chars.pos()..)
            .unwrap_or_default()
            .iter()
            .position(|&c| c == b'\\' || c == b'"')
            .unwrap_or(0);
        if plain > 0 {
            put_bytes(b, chars.pos(), chars.pos() + plain, sink)?;
            chars.i += plain;
        }
        let Some(c) = chars.next() else {
            return Ok(());
        };
        let ch = char::from_u32(c).ok_or(FormatError::LoneSurrogate)?;
        let mut tmp = [0u8; 4];
        sink.put(ch.encode_utf8(&mut tmp))?;
    }
}

/// Python's `repr(str)` of a Rust string: single quotes unless the text holds `'` and no
/// `"`; backslash escapes for the quote, `\`, `\t`, `\n`, `\r`, other control characters
/// and characters Python does not consider printable.
///
/// ```
/// assert_eq!(sockmsg_demo::pyfmt::str_repr("it's \"x\"\n"), r#"'it\'s "x"\n'"#);
/// ```
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        // A String is never full.
        let _ = write_repr_char(u32::from(c), quote, &mut out);
    }
    out.push(quote);
    out
}

/// CPython's `str.isprintable()` for one character: false for control, format,
/// separator, surrogate, private-use and unassigned characters and spaces other than
/// U+0020 (the table of the Python that generated [`crate::unprintable`]).
pub(crate) fn is_printable(c: char) -> bool {
    let c = u32::from(c);
    if (0x20..0x7f).contains(&c) {
        return true;
    }
    crate::unprintable::UNPRINTABLE
        .binary_search_by(|&(from, to)| {
            if to < c {
                Ordering::Less
            } else if from > c {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        })
        .is_err()
}

/// Python's `repr(bytes)`: `b'...'` (or `b"..."` if the bytes hold `'` and no `"`),
/// printable ASCII as itself, `\\`, `\t`, `\n`, `\r`, everything else `\xNN`.
///
/// ```
/// assert_eq!(
///     sockmsg_demo::pyfmt::bytes_repr("binary☺".as_bytes()),
///     r"b'binary\xe2\x98\xba'"
/// );
/// ```
pub fn bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::with_capacity(bytes.len() + 3);
    out.push('b');
    out.push(char::from(quote));
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b if b == quote => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            b => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push(char::from(quote));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(json: &str) -> String {
        PyJson::parse(json, 32).expect("test JSON").root().py_repr()
    }

    fn str_of(json: &str) -> String {
        PyJson::parse(json, 32)
            .expect("test JSON")
            .root()
            .py_str()
            .expect("printable")
    }

    #[test]
    fn scalars_format_as_python() {
        assert_eq!(str_of("null"), "None");
        assert_eq!(str_of("true"), "True");
        assert_eq!(str_of("false"), "False");
        assert_eq!(str_of("-5"), "-5");
        assert_eq!(str_of("-0"), "0");
        assert_eq!(str_of("18446744073709551615"), "18446744073709551615");
        assert_eq!(
            str_of("-123456789012345678901234567890"),
            "-123456789012345678901234567890"
        );
        assert_eq!(str_of("\"a'b\""), "a'b");
        assert_eq!(str_of(r#""a\u0027\n\ud83d\ude00""#), "a'\n😀");
        assert_eq!(
            PyJson::parse(r#""\ud800""#, 32).map(|d| d.root().py_str()),
            Ok(Err(FormatError::LoneSurrogate))
        );
    }

    #[test]
    fn floats_format_as_python_repr() {
        for (text, want) in [
            ("0.1", "0.1"),
            ("-2.5", "-2.5"),
            ("100.0", "100.0"),
            ("1e15", "1000000000000000.0"),
            ("1e16", "1e+16"),
            ("1.2345e20", "1.2345e+20"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("-0.0", "-0.0"),
            ("0.0", "0.0"),
            ("0.000", "0.0"),
            ("1.50", "1.5"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
            ("123456789.125", "123456789.125"),
            ("1e400", "inf"),
            ("-1e400", "-inf"),
            ("0.1000000000000000055511151231257827", "0.1"),
            ("123456789012345.6", "123456789012345.6"),
            ("1234567890123456.7", "1234567890123456.8"),
            ("2E3", "2000.0"),
            ("-1.5E-7", "-1.5e-07"),
            ("12.5e-1", "1.25"),
            ("0.00012e4", "1.2"),
            ("1e-4", "0.0001"),
            ("123e-7", "1.23e-05"),
            ("100e13", "1000000000000000.0"),
            ("10e15", "1e+16"),
            ("-0e5", "-0.0"),
            ("1e307", "1e+307"),
            ("1e308", "1e+308"),
            ("1e-308", "1e-308"),
            ("2.5e-320", "2.5e-320"),
            ("1e99999999999", "inf"),
            ("1e-99999999999", "0.0"),
            ("123456789012345e-20", "1.23456789012345e-06"),
        ] {
            assert_eq!(repr(text), want, "{text}");
        }
        // The short path agrees with converting, on every number it takes.
        for text in [
            "1.5",
            "0.1",
            "1e15",
            "9.99999999999999e307",
            "1.00000000000001e-307",
            "-7.25e3",
        ] {
            let mut buf = Buf::default();
            assert!(short_float_repr(text, &mut buf), "{text}");
            assert_eq!(
                buf.as_str(),
                float_repr(text.parse().unwrap_or(f64::NAN)),
                "{text}"
            );
        }
        // And on many others: mantissas of 1 to 17 digits, exponents across the range.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let digits: String = (0..1 + next(17))
                .map(|_| char::from(b'0' + next(10) as u8))
                .collect();
            let int = digits.trim_start_matches('0');
            let int = if int.is_empty() { "0" } else { int };
            let split = next(int.len() as u64 + 1) as usize;
            let (a, b) = int.split_at(split);
            let a = if a.is_empty() { "0" } else { a };
            let exp = next(640) as i64 - 320;
            let text = format!(
                "{}{a}.{}e{exp}",
                if next(2) == 0 { "-" } else { "" },
                if b.is_empty() { "0" } else { b }
            );
            let want = float_repr(text.parse().unwrap_or(f64::NAN));
            let mut out = String::new();
            let _ = write_number(&text, &mut out);
            assert_eq!(out, want, "{text}");
        }
    }

    #[test]
    fn containers_keep_order_and_python_quotes() {
        assert_eq!(
            repr(r#"{"z": 1, "a": [true, null, "x\"y"], "z": 2, "q": {}}"#),
            r#"{'z': 2, 'a': [True, None, 'x"y'], 'q': {}}"#
        );
        assert_eq!(repr("[]"), "[]");
        assert_eq!(repr(" [ 1 , [ ] , { } ] "), "[1, [], {}]");
        assert_eq!(repr(r#"["it's"]"#), r#"["it's"]"#);
        assert_eq!(repr(r#"["it's \"x\""]"#), r#"['it\'s "x"']"#);
    }

    /// json.loads: a repeated key keeps its first position and takes its last value, at
    /// every level, whatever the escapes that spell it.
    #[test]
    fn repeated_keys_as_python_dict() {
        assert_eq!(
            repr(r#"{"a": 1, "b": 2, "a": 3, "c": 4, "a": 5}"#),
            "{'a': 5, 'b': 2, 'c': 4}"
        );
        assert_eq!(
            repr(r#"{"a": {"x": 1, "x": [2]}, "\u0061": {"y": 1, "y": {"z": 0, "z": 9}}}"#),
            "{'a': {'y': {'z': 9}}}"
        );
        assert_eq!(repr(r#"{"é": 1, "\u00e9": 2}"#), "{'é': 2}");
        let doc =
            PyJson::parse(r#"{"action": "x", "value": 1, "action": "search"}"#, 32).expect("JSON");
        assert!(doc.root().get("action").is_some_and(|a| a.str_eq("search")));
        assert!(doc.root().get("nothing").is_none());
    }

    #[test]
    fn string_repr_escapes_like_python() {
        assert_eq!(str_repr("a\\b\n\t\r"), r"'a\\b\n\t\r'");
        assert_eq!(str_repr("\u{1}\u{7f}"), r"'\x01\x7f'");
        assert_eq!(str_repr("🐶 é"), "'🐶 é'");
        assert_eq!(str_repr("\u{a0}\u{2028}\u{feff}"), r"'\xa0\u2028\ufeff'");
        assert_eq!(str_repr("\u{e0001}"), r"'\U000e0001'");
        // Unassigned (in Python 3.11's Unicode 14.0) is unprintable; assigned CJK is not.
        assert_eq!(
            str_repr("\u{378}\u{103ff}\u{4e00}"),
            "'\\u0378\\U000103ff\u{4e00}'"
        );
        assert_eq!(repr(r#""\ud800x\udc00""#), r"'\ud800x\udc00'");
        assert_eq!(repr(r#""\u001b[31m""#), r"'\x1b[31m'");
    }

    #[test]
    fn invalid_json_is_refused_where_it_fails() {
        for (text, offset) in [
            ("", 0),
            ("[1,]", 3),
            ("{\"a\" 1}", 1),
            ("{1: 2}", 1),
            ("01", 1),
            ("1.", 0),
            ("\"\\x\"", 0),
            ("[1] [2]", 4),
            ("\"a\u{1}\"", 0),
            ("nul", 0),
        ] {
            assert_eq!(
                PyJson::parse(text, 32).err(),
                Some(ParseError::Invalid { offset }),
                "{text:?}"
            );
        }
        assert_eq!(
            PyJson::parse("[[[]]]", 2).err(),
            Some(ParseError::TooDeep { max: 2 })
        );
    }

    #[test]
    fn previews_stop_early() {
        let doc = PyJson::parse(r#"[123456, "abcdef", [1, 2, 3]]"#, 32).expect("JSON");
        let mut p = Preview::new(10);
        assert_eq!(doc.root().write_repr(&mut p), Err(Full));
        assert_eq!(p.finish(), "[123456, '...");
    }

    #[test]
    fn bytes_repr_matches_python() {
        assert_eq!(bytes_repr(b""), "b''");
        assert_eq!(bytes_repr(b"it's"), "b\"it's\"");
        assert_eq!(bytes_repr(b"'\""), r#"b'\'"'"#);
        assert_eq!(bytes_repr(b"\x00\x7f\xff\\"), r"b'\x00\x7f\xff\\'");
    }
}
