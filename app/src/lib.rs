//! The sockmsg programs (work in progress).
pub mod bench;
pub mod inspect;
