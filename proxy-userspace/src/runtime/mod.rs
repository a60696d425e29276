//! Immutable tables compiled from a `MeshSnapshot` once per swap and read
//! per request: service ports and their routes (`table`, `route`), built
//! by `compile`. Imports `policy`, the codec (`proxy`) and below only
//! (ARCHITECTURE.md).
pub mod compile;
pub mod ids;
pub mod route;
pub mod table;

pub use table::Table;
