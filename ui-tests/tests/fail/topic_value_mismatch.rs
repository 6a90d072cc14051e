// A topic's value codec must handle the topic's value type.
goka::stream!(Counts = "counts": u64 as goka::codec::StringCodec);

fn main() {}
