//! Transports below the serving layer: how the daemon reaches into a
//! meshed pod's network namespace ([`inpod`]).
pub mod inpod;
