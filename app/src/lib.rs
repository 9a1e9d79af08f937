//! The sockmsg programs (work in progress).
