//! Compresses the binary's debug sections (the line tables that make a
//! backtrace name file and line) at link time: the release binary is about
//! half the size, and std's backtrace reads zlib-compressed sections as is.
//! Only where the linker is known to take the flag (GNU ld, lld on Linux).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,--compress-debug-sections=zlib");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
