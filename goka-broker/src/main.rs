//! `goka-broker`: a local Kafka broker from the shell. See the crate's documentation.

use std::path::PathBuf;
use std::time::Duration;

use goka_broker::{Builder, Kind, LocalBroker};

const USAGE: &str = "\
usage: goka-broker [--nodes 1|3] [--heap SIZE] [--kind kafka|tansu] [--set KEY=VALUE]...
           one broker in the foreground: prints the bootstrap address, stops on Ctrl-C
       goka-broker start [--dir D] [same options]
           in the background: prints the bootstrap address, then `goka-broker stop D`
       goka-broker stop D
       goka-broker fetch [--kind kafka|tansu]
           fetches the broker once into ~/.cache/goka-rs and prints where it is";

fn main() {
    if let Err(message) = run(std::env::args().skip(1).collect()) {
        eprintln!("goka-broker: {message}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let (command, rest) = match args.first().map(String::as_str) {
        Some(c @ ("start" | "stop" | "fetch")) => (c, &args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => ("run", &args[..]),
    };
    if command == "stop" {
        let [dir] = rest else {
            return Err(format!("stop takes the folder `start` printed\n{USAGE}"));
        };
        let stopped = goka_broker::stop_in(&PathBuf::from(dir), Duration::from_secs(30))
            .map_err(|e| format!("stop {dir}: {e}"))?;
        eprintln!("goka-broker: stopped {stopped} node(s) of {dir}");
        return Ok(());
    }
    let (builder, kind) = options(rest)?;
    if command == "fetch" {
        let path = match kind
            .map_or_else(Kind::from_env, Ok)
            .map_err(|e| e.to_string())?
        {
            Kind::Kafka => goka_broker::kafka::jars(),
            Kind::Tansu => goka_broker::tansu::binary(),
        };
        println!("{}", path.map_err(|e| e.to_string())?.display());
        return Ok(());
    }
    let background = command == "start";
    let builder = if background {
        builder.background()
    } else {
        builder
    };
    // Registered before the nodes start, so a Ctrl-C while they start still stops them.
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot handle signals: {e}"))?;
    let broker = builder.start().map_err(|e| e.to_string())?;
    let secs = broker.started_in().as_secs_f64();
    if background {
        let kind = broker.kind();
        let bootstrap = broker.bootstrap().to_owned();
        let dir = broker.detach();
        eprintln!(
            "goka-broker: {kind} serving on {bootstrap} after {secs:.1} s (data in {}; stop with: goka-broker stop {})",
            dir.display(),
            dir.display()
        );
        println!("{bootstrap}");
        return Ok(());
    }
    eprintln!(
        "goka-broker: {} serving on {} after {secs:.1} s (data in {}); Ctrl-C stops it",
        broker.kind(),
        broker.bootstrap(),
        broker.dir().display()
    );
    println!("{}", broker.bootstrap());
    wait(broker, signals)
}

/// Runs until a signal comes or a node exits by itself.
fn wait(
    mut broker: LocalBroker,
    mut signals: signal_hook::iterator::Signals,
) -> Result<(), String> {
    loop {
        if signals.pending().next().is_some() {
            eprintln!("goka-broker: stopping");
            broker.stop();
            return Ok(());
        }
        if broker.has_exited() {
            return Err(format!("a node exited:\n{}", broker.logs(30)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn options(args: &[String]) -> Result<(Builder, Option<Kind>), String> {
    let mut builder = LocalBroker::builder();
    let mut kind = None;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        builder = match flag.as_str() {
            "--nodes" => {
                let text = value()?;
                let nodes = text
                    .parse()
                    .map_err(|_| format!("--nodes {text}: expected 1 or 3"))?;
                builder.nodes(nodes)
            }
            "--heap" => builder.heap(value()?),
            "--set" => builder.setting(value()?),
            "--dir" => builder.dir(value()?),
            "--kind" => {
                let chosen = match value()?.as_str() {
                    "kafka" => Kind::Kafka,
                    "tansu" => Kind::Tansu,
                    other => return Err(format!("--kind {other}: expected kafka or tansu")),
                };
                kind = Some(chosen);
                builder.kind(chosen)
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        };
    }
    Ok((builder, kind))
}
