// Tables are written only by their processor: an emitter of a table does not compile.
use goka::codec::StringCodec;
use goka::emitter::Emitter;

goka::table!(Profiles = "profiles": String as StringCodec);

fn main() {
    let _emitter: Option<Emitter<Profiles>> = None;
}
