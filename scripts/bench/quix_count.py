"""The processor bench's stateful count in Quix Streams, for a side-by-side figure.

Reads every message of the input topic as consumer group `bench-quix`, keeps one counter
per key in Quix's state store (read-modify-write, changelogged), and stops after the given
number of messages. Prints one JSON line: messages, seconds in all, seconds after the
first message.

The consumer's session timeout is the one given (the other sides of the bench use the
same): with Quix Streams' default of 45 s the test broker holds the group join for about
20 s, which says nothing about the library.

Usage: quix_count.py BROKERS TOPIC MESSAGES STATE_DIR [SESSION_TIMEOUT_MS]
"""

import json
import sys
import time

from quixstreams import Application


def main() -> None:
    brokers, topic_name, messages, state_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    session_timeout_ms = int(sys.argv[5]) if len(sys.argv) > 5 else 45000
    app = Application(
        broker_address=brokers,
        consumer_group="bench-quix",
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
