//! Storage load and read figures: 1,000,000 rows of 100-byte values with 10-byte keys loaded
//! into RocksDB in recovery mode (bulk batches, WAL off) and in normal mode (one row plus its
//! offset per write, as a processor applies changelog messages), then point-get latency.
//!
//! `cargo bench -p goka --bench storage` (`-- --rows N` for another size).

use std::time::{Duration, Instant};

use goka::storage::{RocksDbStorage, Storage, WriteBatch};

const VALUE_LEN: usize = 100;
const RECOVERY_BATCH: usize = 10_000;
const GETS: usize = 100_000;

fn main() {
    let rows = parse_rows();
    println!("storage bench: {rows} rows, 10-byte keys, {VALUE_LEN}-byte values");
    println!(
        "{:<34} {:>12} {:>10} {:>9}",
        "load", "rows/s", "MB/s", "seconds"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let recovered = RocksDbStorage::open(dir.path().join("recovery"), "bench", 0).expect("open");
    let recovery = load_recovery(&recovered, rows);
    report("recovery mode (batches of 10,000)", rows, recovery);

    let normal = RocksDbStorage::open(dir.path().join("normal"), "bench", 0).expect("open");
    let normal_load = load_normal(&normal, rows);
    report("normal mode (one row + offset)", rows, normal_load);

    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "point get after load", "p50", "p99", "gets/s"
    );
    let mut gets = Vec::new();
    for (name, storage) in [
        ("recovered storage", &recovered),
        ("normally loaded storage", &normal),
    ] {
        let (p50, p99, rate) = point_gets(storage, rows);
        println!("{name:<34} {p50:>10.2?} {p99:>10.2?} {rate:>10.0}");
        gets.push((p50, p99));
    }
    // One line of figures for `scripts/bench.sh`.
    let per_s = |d: std::time::Duration| rows as f64 / d.as_secs_f64();
    println!(
        "BENCH-JSON {{\"bench\":\"storage\",\"rows\":{rows},\"recovery_rows_per_s\":{:.0},\
         \"normal_rows_per_s\":{:.0},\"get_p50_us\":{:.2},\"get_p99_us\":{:.2}}}",
        per_s(recovery),
        per_s(normal_load),
        gets[0].0.as_secs_f64() * 1e6,
        gets[0].1.as_secs_f64() * 1e6,
    );
}

fn parse_rows() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        // `cargo bench` passes --bench; `cargo test --all-targets` runs a quick smoke size.
        .unwrap_or(if args.iter().any(|a| a == "--bench") {
            1_000_000
        } else {
            20_000
        })
}

/// Key of the `i`-th row written: rows arrive in a scattered key order, as in a changelog.
fn key(i: usize, rows: usize) -> Vec<u8> {
    let scattered = (i as u64 * 2_654_435_761) % rows as u64;
    format!("k{scattered:09}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let mut v = vec![b'v'; VALUE_LEN];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

fn load_recovery(storage: &RocksDbStorage, rows: usize) -> Duration {
    let start = Instant::now();
    storage.begin_recovery().expect("begin recovery");
    let mut batch = WriteBatch::with_capacity(RECOVERY_BATCH);
    for i in 0..rows {
        batch.set(key(i, rows), value(i));
        if batch.len() == RECOVERY_BATCH || i + 1 == rows {
            storage.apply(&batch, Some(i as i64)).expect("apply");
            batch.clear();
        }
    }
    storage.mark_recovered().expect("mark recovered");
    start.elapsed()
}

fn load_normal(storage: &RocksDbStorage, rows: usize) -> Duration {
    let start = Instant::now();
    let mut batch = WriteBatch::with_capacity(1);
    for i in 0..rows {
        batch.set(key(i, rows), value(i));
        storage.apply(&batch, Some(i as i64)).expect("apply");
        batch.clear();
    }
    start.elapsed()
}

fn report(name: &str, rows: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let mb = (rows * (10 + VALUE_LEN)) as f64 / 1e6;
    println!(
        "{name:<34} {:>12.0} {:>10.1} {:>9.2}",
        rows as f64 / secs,
        mb / secs,
        secs
    );
}

fn point_gets(storage: &RocksDbStorage, rows: usize) -> (Duration, Duration, f64) {
    let mut latencies = Vec::with_capacity(GETS);
    let start = Instant::now();
    for i in 0..GETS {
        let k = key((i * 7919) % rows, rows);
        let t = Instant::now();
        let found = storage.get(&k).expect("get");
        latencies.push(t.elapsed());
        assert!(
            found.is_some(),
            "row {} is missing",
            String::from_utf8_lossy(&k)
        );
    }
    let rate = GETS as f64 / start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    (latencies[GETS / 2], latencies[GETS * 99 / 100], rate)
}
