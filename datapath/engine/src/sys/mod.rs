//! The engine's unsafe leaf modules: memory mappings and raw submission.

pub(crate) mod arena;
