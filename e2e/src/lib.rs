//! detour's end-to-end harness.
