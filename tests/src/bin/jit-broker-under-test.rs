//! The real `jit-broker` command, built inside this package so its tests can
//! start it as a process (`CARGO_BIN_EXE_*` covers only a package's own bins).
fn main() -> std::process::ExitCode {
    jit_server::cli::main()
}
