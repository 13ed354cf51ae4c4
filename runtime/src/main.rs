fn main() -> std::process::ExitCode {
    credence::cli::main(std::env::args_os())
}
