//! JSON the way the guide's Python writes it, and the checks made before parsing JSON.
//!
//! Python's `json.dumps(obj, ensure_ascii=False)` separates members with `", "` and keys
//! from values with `": "`, writes non-ASCII characters raw, escapes `"`, `\`, `\n`, `\r`,
//! `\t`, `\b`, `\f` and other control characters below U+0020 as `\u00XX` (lowercase hex),
//! and writes floats with `repr()`. [`PyFormatter`] makes serde_json produce exactly that.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

use crate::error::{Error, Phase};

/// A [`serde_json`] formatter that writes what Python's `json.dumps(ensure_ascii=False)`
/// writes for the same value.
///
/// String escapes already agree with serde_json's defaults (short escapes for the seven
/// characters above, `\u00XX` in lowercase for other control characters, `/`, U+007F and
/// U+2028 raw); separators and float formatting are Python's. Non-finite floats are written
/// as `null` (serde_json never hands them to a formatter), where Python would write the
/// non-JSON `NaN`/`Infinity`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PyFormatter;

impl Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(py_float_repr(&format!("{value:e}")).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(py_float_repr(&format!("{value:e}")).as_bytes())
    }
}

/// Turns Rust's shortest round-trip scientific form (`"1.5e-5"`, `"-1e20"`) into Python's
/// `repr()` of the same float: positional for decimal exponents -4..16 (`"0.0001"`,
/// `"100.0"`), otherwise scientific with a signed two-digit exponent (`"1.5e-05"`, `"1e+16"`).
fn py_float_repr(sci: &str) -> String {
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci, 0),
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if digits.bytes().all(|b| b == b'0') {
        return format!("{sign}0.0");
    }
    let mut out = String::with_capacity(digits.len() + 8);
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat('0').take(int_len - digits.len()));
                out.push_str(".0");
            } else {
                let (int, frac) = digits.split_at(int_len);
                out.push_str(int);
                out.push('.');
                out.push_str(frac);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat('0').take((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let abs = exp.unsigned_abs();
        if abs < 10 {
            out.push('0');
        }
        out.push_str(&abs.to_string());
    }
    out
}

/// Serializes `value` as Python's `json.dumps(value, ensure_ascii=False)` would, appending
/// the UTF-8 bytes to `out`.
pub fn to_writer_py<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    let mut ser = serde_json::Serializer::with_formatter(out, PyFormatter);
    value.serialize(&mut ser).map_err(|e| Error::Serialize {
        reason: e.to_string(),
    })
}

/// Serializes `value` as Python's `json.dumps(value, ensure_ascii=False).encode("utf-8")`.
pub fn to_vec_py<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(64);
    to_writer_py(&mut out, value)?;
    Ok(out)
}

/// Appends `s` as a JSON string literal with Python's escapes.
pub(crate) fn write_py_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Checks that `bytes` is UTF-8, naming the phase and offset of the first bad byte if not.
pub(crate) fn check_utf8(bytes: &[u8], phase: Phase) -> Result<&str, Error> {
    std::str::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 {
        phase,
        offset: e.valid_up_to(),
    })
}

/// Checks, in one pass and without parsing, that the arrays and objects in `bytes` nest no
/// deeper than `max` (strings, with their escapes, are skipped). Run before any parser so a
/// hostile document cannot make a recursive parser go deep.
pub(crate) fn check_depth(bytes: &[u8], max: usize, phase: Phase) -> Result<(), Error> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for &b in bytes {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(Error::NestingTooDeep { phase, max });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `true` for the labels Python's codec registry resolves to UTF-8 (`utf-8`, `UTF8`,
/// `utf_8`, `u8`, `utf`), compared without regard to case.
pub(crate) fn is_utf8_label(label: &str) -> bool {
    let l = label.trim();
    ["utf-8", "utf8", "utf_8", "u8", "utf", "utf-8-sig"]
        .iter()
        .any(|known| l.eq_ignore_ascii_case(known))
        && !l.eq_ignore_ascii_case("utf-8-sig")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_match_python_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1.2345e16, "1.2345e+16"),
            (123456789012345.6, "123456789012345.6"),
            (1e15, "1000000000000000.0"),
            (-2.5e100, "-2.5e+100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ];
        for (v, want) in cases {
            assert_eq!(
                String::from_utf8(to_vec_py(v).unwrap()).unwrap(),
                *want,
                "{v}"
            );
        }
    }

    #[test]
    fn separators_and_escapes_match_python() {
        let v = serde_json::json!({"a": [1, 2, {"b": null}], "s": "q\"\\/\u{7f}\u{2028}\u{1}\n😀"});
        let got = String::from_utf8(to_vec_py(&v).unwrap()).unwrap();
        assert_eq!(
            got,
            "{\"a\": [1, 2, {\"b\": null}], \"s\": \"q\\\"\\\\/\u{7f}\u{2028}\\u0001\\n😀\"}"
        );
        let mut out = Vec::new();
        write_py_str(
            &mut out,
            "q\"\\/\u{7f}\u{2028}\u{1}\u{1f}\u{8}\u{c}\r\t\n😀",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"q\\\"\\\\/\u{7f}\u{2028}\\u0001\\u001f\\b\\f\\r\\t\\n😀\""
        );
    }

    #[test]
    fn depth_check_counts_only_outside_strings() {
        assert!(check_depth(b"[[[]]]", 3, Phase::Content).is_ok());
        assert_eq!(
            check_depth(b"[[[[]]]]", 3, Phase::Content),
            Err(Error::NestingTooDeep {
                phase: Phase::Content,
                max: 3
            })
        );
        assert!(check_depth(br#"["[[[[\"[[[["]"#, 1, Phase::Header).is_ok());
    }

    #[test]
    fn utf8_labels() {
        for l in ["utf-8", "UTF-8", "utf8", "Utf_8"] {
            assert!(is_utf8_label(l), "{l}");
        }
        for l in ["latin-1", "utf-16", "binary", "", "utf-8-sig"] {
            assert!(!is_utf8_label(l), "{l}");
        }
    }
}
