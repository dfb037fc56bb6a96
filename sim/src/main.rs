//! `shoal-sim`: run, sweep and bench the deterministic simulator. See `cli`.

fn main() -> std::process::ExitCode {
    shoal_sim::cli::main()
}
