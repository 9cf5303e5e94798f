//! `weft-cni`: the CNI plugin (see [`weft_cni`]).

fn main() {
    std::process::exit(weft_cni::main());
}
