// A hopping window whose hop does not divide its size.
#![allow(unused_imports, dead_code)]

use std::time::Duration;

use goka::codec::Json;
use goka::window::WindowSpec;

goka::window!(
    Odd = "odd": u64 as Json,
    WindowSpec::hopping(Duration::from_secs(60), Duration::from_secs(7))
);

fn main() {}
