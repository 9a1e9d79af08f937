//! Non-blocking transport (work in progress).
