//! Logging through Envoy (`proxy_log`), which prefixes each line with the plugin name.
//! Lines are formatted only when Envoy would print them.

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

fn enabled(level: LogLevel) -> bool {
    hostcalls::get_log_level().map_or(true, |current| current as u32 <= level as u32)
}

fn emit(level: LogLevel, message: impl FnOnce() -> String) {
    if enabled(level) {
        // Logging must never fail a request: a refused log line is dropped.
        let _ = hostcalls::log(level, &message());
    }
}

pub fn critical(message: impl FnOnce() -> String) {
    emit(LogLevel::Critical, message)
}

pub fn error(message: impl FnOnce() -> String) {
    emit(LogLevel::Error, message)
}

pub fn warn(message: impl FnOnce() -> String) {
    emit(LogLevel::Warn, message)
}

pub fn info(message: impl FnOnce() -> String) {
    emit(LogLevel::Info, message)
}

pub fn debug(message: impl FnOnce() -> String) {
    emit(LogLevel::Debug, message)
}

/// A panic aborts the VM (the release profile has `panic = "abort"`), which takes this
/// worker's filter down; the lints deny the usual causes, and this hook makes sure any
/// that remains is at least reported, at critical level, with its location.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(
            LogLevel::Critical,
            &format!("detour filter panicked (this worker's VM stops): {info}"),
        );
    }));
}
