// goka-peer runs goka itself (github.com/lovoo/goka) beside goka-rs in the interop tests.
//
//	goka-peer count BROKERS STREAM GROUP MESSAGES STATE_DIR
//
// runs a goka processor group GROUP that counts the messages of STREAM per key in its group
// table (GROUP-table, codec.Int64) from the oldest message, until it handled MESSAGES
// messages, then stops it and prints one JSON line: the messages handled and goka's counts of
// the keys it saw. Its local table lives in STATE_DIR: goka's default,
// /tmp/goka/processor/GROUP, outlives the run, and a later run against a new broker would
// find it ahead of the changelog and refuse to start.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/lovoo/goka/codec"
	"github.com/lovoo/goka/storage"
)

// How long a run may take before it gives up.
const limit = 2 * time.Minute

func main() {
	if len(os.Args) != 7 || os.Args[1] != "count" {
		fmt.Fprintln(os.Stderr, "usage: goka-peer count BROKERS STREAM GROUP MESSAGES STATE_DIR")
		os.Exit(2)
	}
	brokers := strings.Split(os.Args[2], ",")
	stream, group := os.Args[3], os.Args[4]
	messages, err := strconv.Atoi(os.Args[5])
	if err != nil {
		fail("MESSAGES: %v", err)
	}
	if err := count(brokers, stream, group, messages, os.Args[6]); err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "goka-peer: "+format+"\n", args...)
	os.Exit(1)
}

// config is goka's default configuration as a user on Kafka 4 runs it: goka's own default
// protocol version (sarama's V2_0_0_0) works against Kafka 4.4, whose oldest versions
// (KIP-896) sarama does not use; the single-node test broker holds one replica.
func config() (*sarama.Config, goka.TopicManagerBuilder) {
	cfg := goka.DefaultConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	goka.ReplaceGlobalConfig(cfg)
	topics := goka.NewTopicManagerConfig()
	topics.Table.Replication = 1
	topics.Stream.Replication = 1
	return cfg, goka.TopicManagerBuilderWithConfig(cfg, topics)
}

func count(brokers []string, stream, group string, messages int, stateDir string) error {
	_, topics := config()
	var mu sync.Mutex
	handled := 0
	counts := map[string]int64{}
	reached := make(chan struct{})
	g := goka.DefineGroup(goka.Group(group),
		goka.Input(goka.Stream(stream), new(codec.String), func(ctx goka.Context, msg interface{}) {
			var n int64
			if v := ctx.Value(); v != nil {
				n = v.(int64)
			}
			ctx.SetValue(n + 1)
			mu.Lock()
			defer mu.Unlock()
			counts[ctx.Key()] = n + 1
			handled++
			if handled == messages {
				close(reached)
			}
		}),
		goka.Persist(new(codec.Int64)),
	)
	p, err := goka.NewProcessor(brokers, g,
		goka.WithTopicManagerBuilder(topics),
		goka.WithStorageBuilder(storage.DefaultBuilder(stateDir)))
	if err != nil {
		return fmt.Errorf("new processor: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-reached:
	case err := <-done:
		cancel()
		return fmt.Errorf("the processor stopped before %d messages: %v", messages, err)
	case <-time.After(limit):
		cancel()
		return fmt.Errorf("only %d of %d messages within %v", handled, messages, limit)
	}
	// Stopping waits for the table writes of what was handled, then commits.
	cancel()
	if err := <-done; err != nil {
		return fmt.Errorf("stopping: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	out, err := json.Marshal(map[string]interface{}{"handled": handled, "counts": counts})
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}
