fn main() -> std::process::ExitCode {
    credence_host::cli::main(std::env::args_os())
}
