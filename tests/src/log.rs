//! What the servers of a test binary log, captured to check the lines they write.
//!
//! ```
//! use sockmsg_tests::log::{captured, lines_with};
//! let _ = captured(tracing::Level::INFO); // once per test binary, before any server runs
//! tracing::info!("closing connection to 127.0.0.1:1 (idle for 1s)");
//! assert_eq!(lines_with("127.0.0.1:1 ").len(), 1);
//! ```

use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};

static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Installs (on the first call) the global `tracing` subscriber of this test binary, at
/// `level` and above, writing into a buffer; returns the buffer. Later calls return the
/// same buffer, whatever their level. Panics if another subscriber was set before.
pub fn captured(level: tracing::Level) -> Arc<Mutex<Vec<u8>>> {
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let installed = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(level)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .try_init();
        assert!(installed.is_ok(), "a tracing subscriber was already set");
        buf
    })
    .clone()
}

/// The whole log captured so far, as text (empty before [`captured`]).
pub fn text() -> String {
    LOG.get().map_or_else(String::new, |log| {
        String::from_utf8_lossy(&log.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    })
}

/// The lines logged so far that contain `needle`.
pub fn lines_with(needle: &str) -> Vec<String> {
    text()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
