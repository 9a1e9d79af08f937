//! Adversarial JSON requests for tests and benchmarks: the shapes that make a naive Python
//! value model slow or large (a tree node per 2 bytes, a linear lookup per key, an answer
//! several times the request).
//!
//! Each shape is a `text/json` request `{"action": "search", "value": VALUE}` of about
//! `len` bytes (at least `len`, at most one element, 1 KiB, more), valid JSON nested at most 32
//! deep (the protocol's default limit).
//!
//! ```
//! use sockmsg_demo::shapes::{request, Shape};
//! for &shape in Shape::ALL {
//!     let m = request(shape, 10_000);
//!     assert!(m.content().len() >= 10_000 && m.content().len() < 11_100, "{shape:?}");
//!     assert!(sockmsg_demo::DemoService::new().respond(&m).is_ok(), "{shape:?}");
//! }
//! ```

use std::fmt::Write as _;

use sockmsg_protocol::Message;

/// The shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `[[0],[0],...]`: two containers per 4 bytes.
    NestedSingletons,
    /// `{"k0":0,"k1":0,...}`: one object of many distinct keys.
    DistinctKeys,
    /// `{"k0":0,"k0":1,"k1":0,"k1":1,...}`: every key twice (what a dict drops and moves).
    RepeatedKeys,
    /// `[[[...[{"a":[0],"a":[1]}]...]]]`, 32 deep in all, repeated: deep nesting with a repeated
    /// key at the bottom.
    DeepNesting,
    /// `["\\\\...", "''\"''..."]`: strings whose `repr()` doubles and triples in the answer.
    EscapeRuns,
    /// `[1e15,1e15,...]`: 5 bytes that print as 18 (`1000000000000000.0`).
    ManyNumbers,
}

impl Shape {
    /// Every shape.
    pub const ALL: &'static [Shape] = &[
        Shape::NestedSingletons,
        Shape::DistinctKeys,
        Shape::RepeatedKeys,
        Shape::DeepNesting,
        Shape::EscapeRuns,
        Shape::ManyNumbers,
    ];

    /// A short name (`nested-singletons`...).
    pub fn name(self) -> &'static str {
        match self {
            Shape::NestedSingletons => "nested-singletons",
            Shape::DistinctKeys => "distinct-keys",
            Shape::RepeatedKeys => "repeated-keys",
            Shape::DeepNesting => "deep-nesting",
            Shape::EscapeRuns => "escape-runs",
            Shape::ManyNumbers => "many-numbers",
        }
    }
}

/// The JSON text of `shape`, about `len` bytes.
pub fn json(shape: Shape, len: usize) -> String {
    const PREFIX: &str = r#"{"action": "search", "value": "#;
    let mut out = String::with_capacity(len + 64);
    out.push_str(PREFIX);
    let (open, close) = match shape {
        Shape::DistinctKeys | Shape::RepeatedKeys => ('{', '}'),
        _ => ('[', ']'),
    };
    out.push(open);
    let mut n = 0usize;
    // Room left for the closing brackets.
    while out.len() + 2 < len {
        if n > 0 {
            out.push(',');
        }
        let _ = match shape {
            Shape::NestedSingletons => write!(out, "[0]"),
            Shape::DistinctKeys => write!(out, "\"k{n}\":0"),
            Shape::RepeatedKeys => write!(out, "\"k{}\":{}", n / 2, n % 2),
            Shape::DeepNesting => {
                let depth = 28;
                out.extend(std::iter::repeat('[').take(depth));
                out.push_str(r#"{"a":[0],"a":[1]}"#);
                out.extend(std::iter::repeat(']').take(depth));
                Ok(())
            }
            Shape::EscapeRuns if n % 2 == 0 => write!(out, "\"{}\"", "\\\\".repeat(500)),
            Shape::EscapeRuns => write!(out, "\"\\\"{}\"", "'".repeat(999)),
            Shape::ManyNumbers => write!(out, "1e15"),
        };
        n += 1;
    }
    out.push(close);
    out.push('}');
    out
}

/// The request of `shape`, about `len` bytes.
pub fn request(shape: Shape, len: usize) -> Message {
    Message::from_parts(
        "text/json".into(),
        "utf-8".into(),
        json(shape, len).into_bytes(),
    )
}
