//! Library target so the workspace can depend on and lint this crate; the
//! programs live in the `weft` binary target (`main.rs`).
#![no_std]
