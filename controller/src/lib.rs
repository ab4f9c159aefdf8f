//! detour's controller.
