//! The benchmark's floor: the cheapest possible credential helper, a native process that
//! prints a fixed credential. credence's one-shot cost is quoted as a ratio to this.
fn main() {
    println!("{{\"secret\":\"tok-static-123\"}}");
}
