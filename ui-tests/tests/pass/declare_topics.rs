// Every form of topic declaration compiles and carries its types.
use goka::codec::{BytesCodec, Int64Codec, Json, StringCodec};
use goka::topic::{Stream, Table, Topic};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Click {
    pub page: String,
}

goka::stream!(
    /// Documented.
    pub Clicks = "clicks": Click as Json
);
goka::stream!(Raw = "raw": Vec<u8> as BytesCodec, key: Vec<u8> as BytesCodec);
goka::table!(pub(crate) Counts = "counts": i64 as Int64Codec);
goka::table!(Names = "names": String as StringCodec, key: i64 as Int64Codec,);

fn stream<T: Stream>() {}
fn table<T: Table>() {}

fn main() {
    stream::<Clicks>();
    stream::<Raw>();
    table::<Counts>();
    table::<Names>();
    let _: <Names as Topic>::Key = 5i64;
    assert_eq!(Clicks::NAME, "clicks");
}
