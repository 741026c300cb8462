//! The engine: everything that touches data on disk on behalf of the reconciler.

pub mod adopt;
pub mod archive;
pub mod beneath;
pub mod capture;
pub mod extract;
pub mod fault;
pub mod locks;
pub mod paths;
pub mod quiesce;
pub mod restore;
pub mod site;
pub mod swap;
pub mod workload;
pub mod xattr;
