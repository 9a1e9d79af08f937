//! Python's view of a JSON value, so the demo application formats values as the guide's
//! Python does (`f"{value}"`, `repr(...)`).
//!
//! The guide's server reads `action` and `value` with `dict.get()` and puts them in an
//! f-string: a string appears as itself, anything else as Python's `str()` of the decoded
//! value (`None`, `True`, `5`, `1.5`, `[1, 'a']`, `{'k': None}`). [`PyValue`] keeps what
//! that needs and `serde_json::Value` loses: the order of object keys, and a repeated
//! key's first position with its last value (as `json.loads` builds a dict).
//!
//! ```
//! use sockmsg_demo::pyfmt::{py_str, PyValue};
//! let v: PyValue = serde_json::from_str(r#"{"b": [1, 2.5, null, true], "a": "it's"}"#)?;
//! assert_eq!(py_str(&v), r#"{'b': [1, 2.5, None, True], 'a': "it's"}"#);
//! assert_eq!(py_str(&PyValue::Str("ring".into())), "ring");
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! Known differences from CPython, all at the edges: integers beyond the 64-bit range
//! arrive as floats (serde_json's limit), and the test for "printable" characters in
//! `repr` of strings knows the control, format, separator and private-use ranges but not
//! every unassigned code point (which CPython escapes and this prints raw).

use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A decoded JSON value as Python's `json.loads` would build it.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `null` (Python `None`).
    None,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// An array (Python `list`).
    List(Vec<PyValue>),
    /// An object (Python `dict`), keys in insertion order.
    Dict(Vec<(String, PyValue)>),
}

impl PyValue {
    /// Python's `dict.get(key)`: the value for `key` if this is an object holding it.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for PyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PyValue, D::Error> {
        deserializer.deserialize_any(PyValueVisitor)
    }
}

struct PyValueVisitor;

impl<'de> Visitor<'de> for PyValueVisitor {
    type Value = PyValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<PyValue, E> {
        Ok(PyValue::None)
    }

    fn visit_none<E: de::Error>(self) -> Result<PyValue, E> {
        Ok(PyValue::None)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<PyValue, E> {
        Ok(PyValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PyValue, E> {
        Ok(PyValue::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PyValue, E> {
        Ok(PyValue::Int(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<PyValue, E> {
        Ok(PyValue::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PyValue, E> {
        Ok(PyValue::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<PyValue, E> {
        Ok(PyValue::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PyValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(PyValue::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PyValue, A::Error> {
        let mut entries: Vec<(String, PyValue)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, PyValue>()? {
            // json.loads: a repeated key keeps its first position and takes the last value.
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
        }
        Ok(PyValue::Dict(entries))
    }
}

/// Python's `str(value)`, which an f-string uses: a string as itself, anything else as
/// [`py_repr`].
pub fn py_str(value: &PyValue) -> String {
    match value {
        PyValue::Str(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr(value)` of the decoded value.
pub fn py_repr(value: &PyValue) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

/// The same as `str(v)` for a missing key: `dict.get()` gives `None`.
pub fn py_str_opt(value: Option<&PyValue>) -> String {
    value.map_or_else(|| "None".to_owned(), py_str)
}

fn write_repr(out: &mut String, value: &PyValue) {
    match value {
        PyValue::None => out.push_str("None"),
        PyValue::Bool(true) => out.push_str("True"),
        PyValue::Bool(false) => out.push_str("False"),
        PyValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        PyValue::Float(x) => out.push_str(&float_repr(*x)),
        PyValue::Str(s) => out.push_str(&str_repr(s)),
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        PyValue::Dict(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&str_repr(k));
                out.push_str(": ");
                write_repr(out, v);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(float)` (the protocol's, which its JSON encoder also uses).
pub use sockmsg_protocol::json::py_float_repr as float_repr;

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`; backslash
/// escapes for the quote, `\`, `\t`, `\n`, `\r`, other control characters and characters
/// Python does not consider printable.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c => {
                let n = u32::from(c);
                let _ = if n <= 0xff {
                    write!(out, "\\x{n:02x}")
                } else if n <= 0xffff {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
        }
    }
    out.push(quote);
    out
}

/// An approximation of CPython's `str.isprintable()` for one character: false for
/// control (Cc), format (Cf), line/paragraph separators, spaces other than U+0020 (Zs),
/// private use (Co) and the noncharacters U+FFFE/U+FFFF.
fn is_printable(c: char) -> bool {
    if c.is_control() {
        return false;
    }
    !matches!(u32::from(c),
        0xA0 | 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x8E2 | 0x1680 | 0x180E
        | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x2064 | 0x2066..=0x206F | 0x3000
        | 0xE000..=0xF8FF | 0xFEFF | 0xFFF9..=0xFFFB | 0xFFFE | 0xFFFF | 0x110BD | 0x110CD
        | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001
        | 0xE0020..=0xE007F | 0xF0000..=0x10FFFF)
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

    fn parse(json: &str) -> PyValue {
        serde_json::from_str(json).expect("test JSON")
    }

    #[test]
    fn scalars_format_as_python() {
        assert_eq!(py_str(&parse("null")), "None");
        assert_eq!(py_str(&parse("true")), "True");
        assert_eq!(py_str(&parse("false")), "False");
        assert_eq!(py_str(&parse("-5")), "-5");
        assert_eq!(
            py_str(&parse("18446744073709551615")),
            "18446744073709551615"
        );
        assert_eq!(py_str(&parse("\"a'b\"")), "a'b");
    }

    #[test]
    fn floats_format_as_python_repr() {
        for (x, want) in [
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e20, "1.2345e+20"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (123456789.125, "123456789.125"),
        ] {
            assert_eq!(float_repr(x), want, "{x:e}");
        }
        assert_eq!(py_str(&parse("1.0")), "1.0");
        assert_eq!(py_str(&parse("2e3")), "2000.0");
    }

    #[test]
    fn containers_keep_order_and_python_quotes() {
        let v = parse(r#"{"z": 1, "a": [true, null, "x\"y"], "z": 2, "q": {}}"#);
        assert_eq!(py_str(&v), r#"{'z': 2, 'a': [True, None, 'x"y'], 'q': {}}"#);
        assert_eq!(py_str(&parse("[]")), "[]");
        assert_eq!(py_str(&parse(r#"["it's"]"#)), r#"["it's"]"#);
        assert_eq!(py_str(&parse(r#"["it's \"x\""]"#)), r#"['it\'s "x"']"#);
    }

    #[test]
    fn string_repr_escapes_like_python() {
        assert_eq!(str_repr("a\\b\n\t\r"), r"'a\\b\n\t\r'");
        assert_eq!(str_repr("\u{1}\u{7f}"), r"'\x01\x7f'");
        assert_eq!(str_repr("🐶 é"), "'🐶 é'");
        assert_eq!(str_repr("\u{a0}\u{2028}\u{feff}"), r"'\xa0\u2028\ufeff'");
        assert_eq!(str_repr("\u{e0001}"), r"'\U000e0001'");
    }

    #[test]
    fn bytes_repr_matches_python() {
        assert_eq!(bytes_repr(b""), "b''");
        assert_eq!(bytes_repr(b"it's"), "b\"it's\"");
        assert_eq!(bytes_repr(b"'\""), r#"b'\'"'"#);
        assert_eq!(bytes_repr(b"\x00\x7f\xff\\"), r"b'\x00\x7f\xff\\'");
    }

    #[test]
    fn get_is_dict_get() {
        let v = parse(r#"{"action": "search"}"#);
        assert_eq!(v.get("action").and_then(PyValue::as_str), Some("search"));
        assert_eq!(v.get("value"), None);
        assert_eq!(parse("[1]").get("action"), None);
        assert_eq!(py_str_opt(None), "None");
    }
}
