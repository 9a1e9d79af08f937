//! CPU time (user + system, from `/proc/self/stat`, so a loaded machine does not inflate
//! it) of one `DemoService::respond` on each adversarial shape of `sockmsg_demo::shapes`,
//! at 1 MB and 16 MiB, with the answer's size; the figures of `BENCHMARKS.md`.
//!
//! `cargo run --release -p sockmsg-demo --example shapes_cpu [ROUNDS]` (Linux)

use sockmsg_demo::shapes::{request, Shape};
use sockmsg_demo::DemoService;

/// CPU seconds this process used so far (utime + stime, in clock ticks of 10 ms).
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let service = DemoService::new();
    println!("shape               size      CPU ms/request  answer");
    for (label, len) in [("1 MB", 1_000_000), ("16 MiB", 16 * 1024 * 1024 - 2048)] {
        for &shape in Shape::ALL {
            let m = request(shape, len);
            let rounds = if len > 1_000_000 {
                rounds.div_ceil(4)
            } else {
                rounds
            };
            let Some(before) = cpu_secs() else {
                eprintln!("shapes_cpu: cannot read /proc/self/stat: Linux only");
                std::process::exit(1);
            };
            let mut answer = String::new();
            for _ in 0..rounds {
                answer = match service.respond(&m) {
                    Ok(a) => format!("{} bytes", a.content().len()),
                    Err(e) => e.to_string(),
                };
            }
            let per = (cpu_secs().unwrap_or(before) - before) * 1000.0 / f64::from(rounds);
            println!("{:18}  {label:8}  {per:14.1}  {answer}", shape.name());
        }
    }
}
