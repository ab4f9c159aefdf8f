//! The `detour` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    detour::cli::main()
}
