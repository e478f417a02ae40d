fn main() {
    eprintln!("bulkhead-control: not wired yet");
    std::process::exit(1);
}
