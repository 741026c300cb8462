//! The files-mode front-end.
