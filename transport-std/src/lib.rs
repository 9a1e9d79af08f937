//! Blocking transport (work in progress).
