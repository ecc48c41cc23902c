fn main() {
    std::process::exit(shoulder::cli::main());
}
