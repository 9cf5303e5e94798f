//! `weft`: the command line (see [`weft::cli`]).

fn main() {
    weft::cli::main();
}
