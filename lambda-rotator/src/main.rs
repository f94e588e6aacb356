//! `aovis-rotator`'s binary; everything lives in the library (see its crate docs).

fn main() -> std::process::ExitCode {
    aovis_rotator::cli::main()
}
