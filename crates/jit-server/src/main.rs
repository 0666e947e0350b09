fn main() -> std::process::ExitCode {
    jit_server::cli::main()
}
