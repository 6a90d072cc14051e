//! Messages per second through a counting processor in the in-memory tester, next to the
//! same counting done on a bare `HashMap` (the floor: decoding, counting, encoding only).
//!
//! `cargo bench -p goka-tests --bench tester` (`-- --messages N` for another size); under
//! `cargo test` it runs a smoke size.

use std::collections::HashMap;
use std::time::Instant;

use goka::codec::{Codec, Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::processor::GroupTable;
use goka::tester::Tester;
use goka_tests::{bench_runtime, bench_size};

const KEYS: usize = 10_000;

goka::stream!(pub Clicks = "clicks": String as StringCodec);

#[goka::processor(group = "bench-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[derive(Debug)]
pub struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

fn main() {
    let messages = bench_size("messages", 1_000_000, 20_000);
    let keys: Vec<String> = (0..KEYS).map(|k| format!("user-{k}")).collect();
    let page = "/home".to_string();

    let tester_rate = bench_runtime(async {
        let mut tester = Tester::new();
        tester.register(Counter).await.expect("register");
        let started = Instant::now();
        for i in 0..messages {
            tester
                .consume::<Clicks>(&keys[i % KEYS], &page)
                .await
                .expect("consume");
        }
        let rate = messages as f64 / started.elapsed().as_secs_f64();
        let expected = (messages / KEYS) as i64;
        let got = tester
            .table::<GroupTable<Counter>>()
            .get(&keys[KEYS - 1])
            .expect("table");
        assert_eq!(got, Some(expected), "every message was counted");
        rate
    });

    let started = Instant::now();
    let mut table: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for i in 0..messages {
        let key = keys[i % KEYS].as_bytes().to_vec();
        let _page: String = StringCodec::decode(page.as_bytes()).expect("decode");
        let count = table
            .get(&key)
            .map(|raw| Int64Codec::decode(raw).expect("decode"))
            .unwrap_or(0);
        let encoded = Int64Codec::encode_to_vec(&(count + 1)).expect("encode");
        table.insert(key, encoded);
    }
    let bare_rate = messages as f64 / started.elapsed().as_secs_f64();

    println!("{messages} messages over {KEYS} keys through a counting processor");
    println!("{:<28} {:>14}", "", "messages/s");
    println!(
        "{:<28} {tester_rate:>14.0}  {} (about 1,000,000/s)",
        "tester",
        goka_tests::bench::verdict(tester_rate, 900_000.0)
    );
    println!("{:<28} {bare_rate:>14.0}", "bare HashMap count");
    println!(
        "{:<28} {:>14.2}",
        "ratio tester/bare",
        tester_rate / bare_rate
    );
    goka_tests::bench_json(
        "tester",
        &[
            ("messages", messages as f64),
            ("tester_per_s", tester_rate),
            ("bare_per_s", bare_rate),
        ],
    );
}
