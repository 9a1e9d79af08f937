//! JSON the way the guide's Python writes it, and the checks made before parsing JSON.
//!
//! Python's `json.dumps(obj, ensure_ascii=False)` separates members with `", "` and keys
//! from values with `": "`, writes non-ASCII characters raw, escapes `"`, `\`, `\n`, `\r`,
//! `\t`, `\b`, `\f` and other control characters below U+0020 as `\u00XX` (lowercase hex),
//! and writes floats with `repr()`. The crate writes its JSON (`Message::json`, header
//! extras) with a serde_json formatter that produces exactly that. Public, for programs that
//! write or read such JSON by hand (`sockmsg-demo`): [`py_float_repr`] (Python's formatting
//! of floats), [`escape_py_str`] (its string escapes) and [`plain_run_len`] (where a run of
//! characters a JSON string holds raw ends).

use std::convert::Infallible;
use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

use crate::error::{LocalError, PeerError, Phase};

/// A [`serde_json`] formatter that writes what Python's `json.dumps(ensure_ascii=False)`
/// writes for the same value.
///
/// String escapes already agree with serde_json's defaults (short escapes for the seven
/// characters above, `\u00XX` in lowercase for other control characters, `/`, U+007F and
/// U+2028 raw); separators and float formatting are Python's. Non-finite floats are written
/// as `null` (serde_json never hands them to a formatter), where Python would write the
/// non-JSON `NaN`/`Infinity`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PyFormatter;

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
        w.write_all(py_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(repr_from_sci(&format!("{value:e}")).as_bytes())
    }
}

/// Python's `repr()` of a float, which is also what its `json.dumps` writes for a finite
/// one: the shortest digits that round-trip, positional notation for decimal exponents
/// from -4 to 15, always with a `.` or an exponent; `nan`, `inf`, `-inf` for the others.
///
/// ```
/// use sockmsg_protocol::json::py_float_repr;
/// assert_eq!(py_float_repr(1.0), "1.0");
/// assert_eq!(py_float_repr(1e16), "1e+16");
/// assert_eq!(py_float_repr(1.5e-5), "1.5e-05");
/// assert_eq!(py_float_repr(-0.0), "-0.0");
/// assert_eq!(py_float_repr(f64::NEG_INFINITY), "-inf");
/// ```
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    repr_from_sci(&format!("{x:e}"))
}

/// Turns Rust's shortest round-trip scientific form (`"1.5e-5"`, `"-1e20"`) into Python's
/// `repr()` of the same float: positional for decimal exponents -4..16 (`"0.0001"`,
/// `"100.0"`), otherwise scientific with a signed two-digit exponent (`"1.5e-05"`, `"1e+16"`).
fn repr_from_sci(sci: &str) -> String {
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

/// Serializes `value` as Python's `json.dumps(value, ensure_ascii=False).encode("utf-8")`.
pub(crate) fn to_vec_py<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, LocalError> {
    let mut out = Vec::with_capacity(64);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    value
        .serialize(&mut ser)
        .map_err(|e| LocalError::Serialize {
            reason: e.to_string(),
        })?;
    Ok(out)
}

/// Appends `s` as a JSON string literal with Python's escapes ([`escape_py_str`]).
pub(crate) fn write_py_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escape_py_str(s, |piece| {
        out.extend_from_slice(piece);
        Ok::<(), Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    out.push(b'"');
}

/// Escapes `s` for the inside of a JSON string literal as Python's
/// `json.dumps(..., ensure_ascii=False)` writes it: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`,
/// `\f`, `\u00XX` (lowercase hex) for the other control characters, everything else raw.
/// The result goes to `put` in pieces, each run of plain bytes whole (found eight bytes at a
/// time, [`plain_run_len`]) and each escape on its own; the first error `put` returns stops
/// it and is returned.
///
/// ```
/// use sockmsg_protocol::json::escape_py_str;
///
/// let mut out = Vec::new();
/// escape_py_str("say \"hi\"\n\u{1}é", |piece| {
///     out.extend_from_slice(piece);
///     Ok::<(), ()>(())
/// })?;
/// assert_eq!(out, "say \\\"hi\\\"\\n\\u0001é".as_bytes());
/// # Ok::<(), ()>(())
/// ```
pub fn escape_py_str<E>(s: &str, mut put: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
    let mut bytes = s.as_bytes();
    while let Some(n) = plain_run_len(bytes) {
        let (plain, rest) = bytes.split_at(n);
        put(plain)?;
        let Some((&b, rest)) = rest.split_first() else {
            break;
        };
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        if esc.is_empty() {
            // Lowercase hex digits, computed (no table indexed by an input byte).
            let hex = |n: u8| if n < 10 { b'0' + n } else { b'a' + (n - 10) };
            put(&[b'\\', b'u', b'0', b'0', hex(b >> 4), hex(b & 0xf)])?;
        } else {
            put(esc)?;
        }
        bytes = rest;
    }
    put(bytes)
}

/// Checks that `bytes` is UTF-8, naming the phase and offset of the first bad byte if not.
pub(crate) fn check_utf8(bytes: &[u8], phase: Phase) -> Result<(), PeerError> {
    // `is_ascii` works a word at a time; short ASCII input (every real header) is far
    // cheaper to clear this way than through the general validator.
    if bytes.is_ascii() {
        return Ok(());
    }
    std::str::from_utf8(bytes)
        .map(|_| ())
        .map_err(|e| PeerError::InvalidUtf8 {
            phase,
            offset: e.valid_up_to(),
        })
}

/// Checks, in one pass and without parsing, that the arrays and objects in `bytes` nest no
/// deeper than `max` (strings, with their escapes, are skipped). Run before any parser so a
/// hostile document cannot make a recursive parser go deep.
pub(crate) fn check_depth(bytes: &[u8], max: usize, phase: Phase) -> Result<(), PeerError> {
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
                    return Err(PeerError::NestingTooDeep { phase, max });
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
    if label == "utf-8" {
        return true;
    }
    let l = label.trim();
    ["utf-8", "utf8", "utf_8", "u8", "utf"]
        .iter()
        .any(|known| l.eq_ignore_ascii_case(known))
}

/// `true` if `b` is one well-formed JSON text (any value, surrounded by optional
/// whitespace) nesting no deeper than `max_depth` (at most 127), as serde_json's parser
/// would accept it when skipping the value (`IgnoredAny`: `\\u` escapes are checked for four
/// hex digits, not for surrogate pairing; numbers for syntax, not range). UTF-8 must be
/// checked separately.
///
/// One pass, no allocation, no recursion: the container stack is a bit set. It is only a
/// fast "yes": on "no", callers ask serde_json, whose error (with line and column) is the
/// answer, so a too-strict answer here would only cost time, never change a verdict.
pub(crate) fn is_valid_json(b: &[u8], max_depth: usize) -> bool {
    let max_depth = max_depth.min(127);
    // Bit `d` set: the container at depth `d + 1` is an object.
    let mut objects: u128 = 0;
    let mut depth = 0usize;
    let mut i = skip_ws(b, 0);
    loop {
        // A value starts at `i`.
        match b.get(i) {
            Some(b'{') | Some(b'[') => {
                let is_object = b.get(i) == Some(&b'{');
                if depth >= max_depth {
                    return false;
                }
                if is_object {
                    objects |= 1 << depth;
                } else {
                    objects &= !(1 << depth);
                }
                depth += 1;
                i = skip_ws(b, i + 1);
                let close = if is_object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    depth -= 1;
                    i += 1;
                } else {
                    if is_object {
                        match member_key(b, i) {
                            Some(next) => i = next,
                            None => return false,
                        }
                    }
                    continue;
                }
            }
            Some(b'"') => match skip_string(b, i) {
                Some(next) => i = next,
                None => return false,
            },
            Some(b'-' | b'0'..=b'9') => match skip_number(b, i) {
                Some(next) => i = next,
                None => return false,
            },
            Some(b't') if b.get(i..i + 4) == Some(b"true") => i += 4,
            Some(b'f') if b.get(i..i + 5) == Some(b"false") => i += 5,
            Some(b'n') if b.get(i..i + 4) == Some(b"null") => i += 4,
            _ => return false,
        }
        // A value ended at `i`: close containers, or find the next value.
        loop {
            i = skip_ws(b, i);
            if depth == 0 {
                return i == b.len();
            }
            let in_object = objects & (1 << (depth - 1)) != 0;
            match (b.get(i), in_object) {
                (Some(b','), false) => {
                    i = skip_ws(b, i + 1);
                    break;
                }
                (Some(b','), true) => match member_key(b, skip_ws(b, i + 1)) {
                    Some(next) => {
                        i = next;
                        break;
                    }
                    None => return false,
                },
                (Some(b']'), false) | (Some(b'}'), true) => {
                    depth -= 1;
                    i += 1;
                }
                _ => return false,
            }
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// `"key"` then `:` at `i`; returns where the value starts.
fn member_key(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_ws(b, skip_string(b, i)?);
    if b.get(i) != Some(&b':') {
        return None;
    }
    Some(skip_ws(b, i + 1))
}

/// Bytes that end a run of plain string characters: `"`, `\\` and control characters.
static STRING_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// `true` for `"`, `\\` and control characters: the bytes a JSON string cannot hold raw.
#[inline]
pub(crate) fn ends_plain_run(c: u8) -> bool {
    STRING_SPECIAL[usize::from(c)]
}

/// The index of the first `"`, `\\` or control character in `b` (`None` if it holds none):
/// where a run of characters a JSON string holds raw ends. Eight bytes at a time (a word, compared all at once), then
/// byte by byte for the last few: JSON strings are mostly short, and the word read past a
/// string's end holds its closing quote.
#[inline]
pub fn plain_run_len(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // High bit of each byte that is zero in `x` (below the first such byte, none is set
    // wrongly: only the lowest set bit is used).
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // Bytes below 0x20, then bytes equal to `"` and to `\\`.
        let found = (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
            | zero_bytes(x ^ (ONES * u64::from(b'"')))
            | zero_bytes(x ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| ends_plain_run(c))
        .map(|k| at + k)
}

/// A string whose opening quote is at `i`; returns the index after its closing quote.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut i = i + 1;
    loop {
        let rest = b.get(i..)?;
        let k = plain_run_len(rest)?;
        i += k;
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = b.get(i + 2..i + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
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

/// A number starting at `i` (RFC 8259 grammar); returns the index after it.
fn skip_number(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let digits = |b: &[u8], mut i: usize| -> Option<usize> {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i)?,
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time scan finds what a byte-by-byte scan finds: every byte value at
    /// every offset of short and longer texts, with plain bytes (ASCII and UTF-8) around
    /// it, and texts holding several special bytes.
    #[test]
    fn plain_run_len_is_the_first_special_byte() {
        let reference = |b: &[u8]| b.iter().position(|&c| ends_plain_run(c));
        for len in 0..=20 {
            for at in 0..len {
                for v in 0..=255u8 {
                    let mut b: Vec<u8> = "aé€z0 ~\u{7f}".bytes().cycle().take(len).collect();
                    b[at] = v;
                    assert_eq!(plain_run_len(&b), reference(&b), "{b:?}");
                }
            }
            let plain: Vec<u8> = "ab\u{ff}".bytes().cycle().take(len).collect();
            assert_eq!(plain_run_len(&plain), None);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let b: Vec<u8> = (0..len)
                .map(|k| {
                    let r = (x >> (k % 56)) as u8;
                    // Mostly plain, sometimes special.
                    if r % 7 == 0 {
                        [b'"', b'\\', 0, 0x1f][usize::from(r % 4)]
                    } else {
                        r | 0x20
                    }
                })
                .collect();
            assert_eq!(plain_run_len(&b), reference(&b), "{b:?}");
        }
    }

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
            Err(PeerError::NestingTooDeep {
                phase: Phase::Content,
                max: 3
            })
        );
        assert!(check_depth(br#"["[[[[\"[[[["]"#, 1, Phase::Header).is_ok());
    }

    #[test]
    fn validator_agrees_with_serde_json() {
        let cases: &[&str] = &[
            "{}",
            "[]",
            " { } ",
            "0",
            "-0",
            "1.5e-3",
            "-12E+4",
            "true",
            "false",
            "null",
            "\"s\"",
            r#"{"a": [1, {"b": null}, "x\"\\\/\b\f\n\r\t\u00e9"], "c": {}}"#,
            r#"{"action": "search", "value": "morpheus"}"#,
            "[[[[]]]]",
            "\"\\ud800\"",
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1: 2}",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"a\u{1}b\"",
            "1 2",
            "[]]",
            "{}}",
            "[}",
            "{]",
            "\"unterminated",
            "NaN",
            "[-]",
        ];
        for case in cases {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(case).is_ok();
            assert_eq!(is_valid_json(case.as_bytes(), 127), serde, "{case:?}");
        }
        assert!(is_valid_json(b"[[[]]]", 3));
        assert!(!is_valid_json(b"[[[[]]]]", 3));
        assert!(!is_valid_json(b"{\"a\": [{}]}", 2));
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
