//! The engine: everything that touches data on disk on behalf of the reconciler.

pub mod archive;
pub mod capture;
pub mod fsutil;
pub mod locks;
pub mod paths;
