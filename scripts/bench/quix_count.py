"""The benches' counts in Quix Streams, for side-by-side figures.

Reads every message of the input topic as a consumer group of its own and stops after the
given number of messages. Mode `count` (the processor bench) keeps one counter per key in
Quix's state store (read-modify-write, changelogged); mode `window` (the windows bench)
counts per key in tumbling windows of one minute over the message timestamps
(`tumbling_window(...).count()`, changelogged). Prints one JSON line: messages, seconds in
all, seconds after the first message.

The consumer's session timeout is the one given (the other sides of the bench use the
same): with Quix Streams' default of 45 s the test broker holds the group join for about
20 s, which says nothing about the library.

Usage: quix_count.py BROKERS TOPIC MESSAGES STATE_DIR [SESSION_TIMEOUT_MS [count|window]]
"""

import json
import sys
import time
from datetime import timedelta

from quixstreams import Application


def main() -> None:
    brokers, topic_name, messages, state_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    session_timeout_ms = int(sys.argv[5]) if len(sys.argv) > 5 else 45000
    mode = sys.argv[6] if len(sys.argv) > 6 else "count"
    app = Application(
        broker_address=brokers,
        consumer_group="bench-quix" if mode == "count" else "bench-quix-window",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        consumer_extra_config={"session.timeout.ms": session_timeout_ms},
        loglevel=None,
    )
    topic = app.topic(topic_name, key_deserializer="str", value_deserializer="bytes")
    sdf = app.dataframe(topic)

    def count(value, state):
        total = state.get("count", 0) + 1
        state.set("count", total)
        return total

    progress = {"seen": 0, "first": None}

    def seen(_value):
        if progress["first"] is None:
            progress["first"] = time.monotonic()
        progress["seen"] += 1
        if progress["seen"] >= messages:
            app.stop()

    if mode == "window":
        sdf = sdf.tumbling_window(timedelta(minutes=1)).count().current()
    else:
        sdf = sdf.apply(count, stateful=True)
    sdf = sdf.update(seen)
    start = time.monotonic()
    app.run()
    end = time.monotonic()
    first = progress["first"] or end
    print(json.dumps({
        "messages": progress["seen"],
        "seconds": end - start,
        "after_first": end - first,
    }))


if __name__ == "__main__":
    main()
