//! Importers: other systems' failover documents in, detour documents out
//! (`detour import ...`). Pure: text in, documents and a report out; the CLI reads and
//! writes the files.

pub mod gloo;
