//! The `ferry` binary. Everything it does is in the library; `cli` turns
//! flags into the library's requests and its results into exit statuses.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
