//! Exploration: where a 16 MiB content's time goes (growth, zero-fill, copies).
use std::hint::black_box;
use std::time::Instant;

use sockmsg_protocol::{decode, encode, Connection, Event, Limits, Message, Role};

const TOTAL: usize = 16 * 1024 * 1024;
const READ: usize = 64 * 1024;
const WINDOW: usize = 128 * 1024;

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
        .unwrap_or(0)
}

fn conn_once(wire: &[u8]) -> usize {
    conn_with(wire, |m| m.content_len())
}

fn conn_with(wire: &[u8], f: impl Fn(&Message) -> usize) -> usize {
    let mut c = Connection::new(Role::Server, Limits::default());
    let now = Instant::now();
    let mut n = 0;
    for piece in wire.chunks(READ) {
        let mut piece = piece;
        while !piece.is_empty() {
            let buf = c.read_buf();
            let k = buf.len().min(piece.len());
            buf[..k].copy_from_slice(&piece[..k]);
            c.commit(k, now).unwrap();
            piece = &piece[k..];
            while let Ok(Event::Message(m)) = c.next_event() {
                n += f(&m);
                black_box(m);
            }
        }
    }
    n
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let iters: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let only: Vec<String> = args.iter().skip(2).cloned().collect();
    let content: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let wire = encode(&Message::binary("x/y", content.clone())).unwrap();
    let mut reused = vec![0u8; TOTAL];
    type F<'a> = Box<dyn FnMut() -> usize + 'a>;
    let c2 = &content;
    let mut variants: Vec<(&str, F)> = vec![
        (
            "floor",
            Box::new(|| {
                reused.clear();
                for p in c2.chunks(READ) {
                    reused.extend_from_slice(p);
                }
                black_box(&reused);
                reused.len()
            }),
        ),
        (
            "upfront",
            Box::new(|| {
                let mut v = Vec::with_capacity(TOTAL);
                for p in c2.chunks(READ) {
                    v.extend_from_slice(p);
                }
                black_box(v).len()
            }),
        ),
        (
            "upfront_zero",
            Box::new(|| {
                let mut v: Vec<u8> = Vec::with_capacity(TOTAL);
                let mut filled = 0;
                for p in c2.chunks(READ) {
                    if v.len() == filled {
                        let end = (filled + WINDOW).min(TOTAL);
                        v.resize(end, 0);
                    }
                    v[filled..filled + p.len()].copy_from_slice(p);
                    filled += p.len();
                }
                black_box(v).len()
            }),
        ),
        (
            "double_nozero",
            Box::new(|| {
                let mut v: Vec<u8> = Vec::new();
                for p in c2.chunks(READ) {
                    if v.len() + p.len() > v.capacity() {
                        let nc = (v.len() + p.len()).max(v.len() * 2).clamp(READ, TOTAL);
                        v.reserve_exact(nc - v.len());
                    }
                    v.extend_from_slice(p);
                }
                black_box(v).len()
            }),
        ),
        (
            "chunks",
            Box::new(|| {
                let mut chunks: Vec<Vec<u8>> = Vec::new();
                let mut total = 0;
                for p in c2.chunks(READ) {
                    let need_new = chunks.last().map_or(true, |c| c.len() == c.capacity());
                    if need_new {
                        let size = total.max(READ).min(TOTAL - total);
                        chunks.push(Vec::with_capacity(size));
                    }
                    chunks.last_mut().unwrap().extend_from_slice(p);
                    total += p.len();
                }
                black_box(chunks).len()
            }),
        ),
        ("conn", Box::new(|| conn_once(&wire))),
        (
            "conn_joined",
            Box::new(|| conn_with(&wire, |m| m.content().len())),
        ),
        (
            "decode",
            Box::new(|| decode(&wire, &Limits::default()).unwrap().0.content().len()),
        ),
    ];
    if !only.is_empty() {
        variants.retain(|(n, _)| only.iter().any(|o| o == n));
    }
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for (_, f) in variants.iter_mut() {
        f();
    }
    for _ in 0..rounds {
        for (i, (_, f)) in variants.iter_mut().enumerate() {
            let c0 = cpu_ns();
            let t0 = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            let dt = t0.elapsed().as_nanos() as f64 / iters as f64;
            let dc = (cpu_ns() - c0) as f64 / iters as f64;
            cpu[i].push(dc);
            wall[i].push(dt);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let floor_cpu = med(&mut cpu[0].clone());
    for (i, (name, _)) in variants.iter().enumerate() {
        let c = med(&mut cpu[i]);
        let w = med(&mut wall[i]);
        println!(
            "{name:16} cpu {:8.0} us  {:6.2} GB/s  wall {:8.0} us  floor/this (cpu) {:.2}",
            c / 1e3,
            TOTAL as f64 / c,
            w / 1e3,
            floor_cpu / c
        );
    }
}
