//! `app-certs`: makes a test CA, a server certificate (localhost, 127.0.0.1, ::1) and a
//! client certificate in a directory, so TLS can be tried locally at once. Not for
//! production: the keys are plain PEM files (written readable by their owner only).
//!
//! Exit codes: 0 done, 1 a file could not be written (or already exists without
//! `--force`), 2 bad arguments. Errors are one line: `app-certs: what failed: why`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use sockmsg_tls::certs::{Authority, Spec, Usage};

/// Make a test CA, a server and a client certificate (PEM) for trying sockmsg over TLS.
#[derive(Parser, Debug)]
#[command(name = "app-certs", version)]
struct Args {
    /// Directory to write into (created if missing).
    #[arg(default_value = "certs")]
    dir: PathBuf,
    /// Names the server certificate is valid for (DNS names or IP addresses); repeat.
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
    names: Vec<String>,
    /// The client certificate's common name (what a server sees under mutual TLS).
    #[arg(long, default_value = "client")]
    client_name: String,
    /// Validity in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

const PROGRAM: &str = "app-certs";

fn fail(what: impl std::fmt::Display, why: impl std::fmt::Display) -> ExitCode {
    eprintln!("{PROGRAM}: {what}: {why}");
    ExitCode::from(1)
}

fn write(path: &Path, text: &str, secret: bool, force: bool) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options.open(path)?.write_all(text.as_bytes())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        return fail(format!("cannot create {}", args.dir.display()), e);
    }
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    // A name of its own for each CA made, so that certificates from another run are
    // "unknown CA", not a signature mismatch under the same name.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let made = Authority::new(&format!("sockmsg test CA {stamp:x}"), args.days).and_then(|ca| {
        let server_cn = names.first().copied().unwrap_or("localhost");
        let server = ca.issue(&Spec::new(Usage::Server, server_cn, &names, args.days))?;
        let client = ca.issue(&Spec::new(Usage::Client, &args.client_name, &[], args.days))?;
        Ok((ca, server, client))
    });
    let (ca, server, client) = match made {
        Ok(made) => made,
        Err(e) => return fail("cannot make the certificates", e),
    };
    let files = [
        ("ca.pem", ca.cert_pem(), false),
        ("ca-key.pem", ca.key_pem(), true),
        ("server.pem", server.cert_pem, false),
        ("server-key.pem", server.key_pem, true),
        ("client.pem", client.cert_pem, false),
        ("client-key.pem", client.key_pem, true),
    ];
    for (name, text, secret) in &files {
        let path = args.dir.join(name);
        if let Err(e) = write(&path, text, *secret, args.force) {
            let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "it already exists (use --force to overwrite)".to_owned()
            } else {
                e.to_string()
            };
            return fail(format!("cannot write {}", path.display()), why);
        }
    }
    let d = args.dir.display();
    println!("wrote {d}/ca.pem, {d}/server.pem + server-key.pem (for {}), {d}/client.pem + client-key.pem (CN={})", names.join(", "), args.client_name);
    println!("server:  app-server --tls-cert {d}/server.pem --tls-key {d}/server-key.pem [--tls-client-ca {d}/ca.pem]");
    println!("client:  app-client --tls --ca {d}/ca.pem [--cert {d}/client.pem --key {d}/client-key.pem] ...");
    ExitCode::SUCCESS
}
