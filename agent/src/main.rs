//! `aovis-agent`: see the library's crate docs for what each command does.

fn main() -> std::process::ExitCode {
    aovis_agent::cli::main()
}
