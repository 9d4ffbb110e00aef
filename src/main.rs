//! rstunnel's entry point: hands the command line to `cli::run` and exits with its code.

fn main() {
    std::process::exit(rstunnel::cli::run(std::env::args_os().collect()));
}
