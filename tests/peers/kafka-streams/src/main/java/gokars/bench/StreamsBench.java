package gokars.bench;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;

/**
 * The benches' work in Kafka Streams, for side-by-side figures, written as a Kafka Streams user
 * writes it: the DSL with its default stores (RocksDB, changelogged, record caches on).
 *
 * <p>Modes: {@code count} counts per key into a KTable ({@code groupByKey().count()});
 * {@code window} counts per key in one-minute tumbling windows without grace (a windowed
 * KTable, as goka-rs's windows bench keeps a windowed table); {@code window-final} does the
 * same with a grace and emits each window's final count once
 * ({@code suppress(untilWindowCloses)}) to {@code TOPIC-streams-per-minute}; {@code join}
 * joins the input with a table topic and emits the result to {@code TOPIC-streams-joined}.
 * Output topics must exist: the brokers of the benches create no topic on first use. The run stops once the given number of input messages went
 * through the topology, then closes the application (its last commit and changelog flush are
 * in the time). Prints one JSON line: messages, seconds in all, seconds after the first
 * message, and the peak resident memory of this JVM.
 *
 * <p>Usage: {@code StreamsBench BROKERS TOPIC MESSAGES STATE_DIR SESSION_TIMEOUT_MS MODE
 * GUARANTEE [TABLE_TOPIC]}, GUARANTEE {@code at_least_once} or {@code exactly_once_v2}.
 */
public final class StreamsBench {
    private static final Duration RUN_LIMIT = Duration.ofMinutes(15);

    private StreamsBench() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 7) {
            System.err.println("usage: StreamsBench BROKERS TOPIC MESSAGES STATE_DIR "
                    + "SESSION_TIMEOUT_MS count|window|join at_least_once|exactly_once_v2 [TABLE_TOPIC]");
            System.exit(2);
        }
        String brokers = args[0];
        String topic = args[1];
        long messages = Long.parseLong(args[2]);
        String stateDir = args[3];
        String sessionTimeout = args[4];
        String mode = args[5];
        String guarantee = args[6];

        Properties config = new Properties();
        config.put(StreamsConfig.APPLICATION_ID_CONFIG, "bench-streams-" + mode + "-" + guarantee.replace('_', '-'));
        config.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        config.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        config.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        config.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), sessionTimeout);
        config.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        AtomicLong seen = new AtomicLong();
        AtomicLong first = new AtomicLong();
        CountDownLatch done = new CountDownLatch(1);

        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, byte[]> input = builder
                .stream(topic, Consumed.with(Serdes.String(), Serdes.ByteArray()))
                .peek((key, value) -> {
                    first.compareAndSet(0, System.nanoTime());
                    if (seen.incrementAndGet() == messages) {
                        done.countDown();
                    }
                });
        switch (mode) {
            case "count" -> input.groupByKey().count();
            case "window" -> input.groupByKey()
                    .windowedBy(TimeWindows.ofSizeWithNoGrace(Duration.ofMinutes(1)))
                    .count();
            case "window-final" -> input.groupByKey()
                    .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(1), Duration.ofSeconds(10)))
                    .count()
                    .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                    .toStream((window, count) -> window.key())
                    .to(topic + "-streams-per-minute", Produced.with(Serdes.String(), Serdes.Long()));
            case "join" -> {
                if (args.length < 8) {
                    throw new IllegalArgumentException("mode join needs TABLE_TOPIC");
                }
                KTable<String, byte[]> table =
                        builder.table(args[7], Consumed.with(Serdes.String(), Serdes.ByteArray()));
                input.join(table, (value, row) -> row)
                        .to(topic + "-streams-joined", Produced.with(Serdes.String(), Serdes.ByteArray()));
            }
            default -> throw new IllegalArgumentException("unknown mode " + mode);
        }

        long start = System.nanoTime();
        KafkaStreams streams = new KafkaStreams(builder.build(), config);
        streams.setUncaughtExceptionHandler(error -> {
            System.err.println("kafka streams failed: " + error);
            done.countDown();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                    .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.start();
        boolean finished = done.await(RUN_LIMIT.toSeconds(), TimeUnit.SECONDS);
        streams.close(Duration.ofMinutes(2));
        long end = System.nanoTime();
        if (!finished || seen.get() < messages) {
            System.err.printf("kafka streams handled %d of %d messages%n", seen.get(), messages);
            System.exit(1);
        }
        System.out.println(String.format(Locale.ROOT,
                "{\"messages\": %d, \"seconds\": %.6f, \"after_first\": %.6f, \"peak_rss_bytes\": %d}",
                seen.get(), (end - start) / 1e9, (end - first.get()) / 1e9, peakRss()));
    }

    /** The peak resident set of this process (VmHWM), in bytes; 0 where /proc is absent. */
    private static long peakRss() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    String kib = line.substring("VmHWM:".length()).trim().split("\\s+")[0];
                    return Long.parseLong(kib) * 1024;
                }
            }
        } catch (Exception e) {
            return 0;
        }
        return 0;
    }
}
