// goka-peer runs goka itself (github.com/lovoo/goka) beside goka-rs in the interop tests.
//
//	goka-peer MODE -brokers B -group G -stream S [flags]
//
// Modes:
//
//	count  a processor group G counts the messages of S per key in its group table
//	       (G-table, codec.Int64)
//	join   a processor group G joins S with -table and looks up -lookup (both codec.Int64)
//	       and emits what it found to -output
//	loop   a processor group G loops every message "TO|..." of S back to the key TO; the
//	       loopback handler counts them in G-table
//	emit   goka's Emitter sends -messages messages to S, with headers
//	view   goka's View of -table (codec.Int64) prints every row once it recovered
//
// A processor mode stops after -messages handled messages, or with -messages 0 when its
// standard input closes; it stops the way a goka service stops (cancelling Run, which
// commits what was handled) and prints one JSON report on the last line of stdout. While it
// runs it prints a JSON line per assignment it receives. Local tables live in -state: goka's
// default, /tmp/goka/processor/G, outlives the run, and a later run against a new broker
// would find it ahead of the changelog and refuse to start.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/lovoo/goka/storage"
)

// How long a run may take before it gives up.
const limit = 2 * time.Minute

type options struct {
	brokers  []string
	group    string
	stream   string
	table    string
	lookup   string
	output   string
	state    string
	messages int
	strategy string
	codec    string
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: goka-peer count|join|loop|emit|view -brokers B -group G -stream S [flags]")
	}
	mode := os.Args[1]
	flags := flag.NewFlagSet(mode, flag.ExitOnError)
	brokers := flags.String("brokers", "", "bootstrap servers, comma-separated")
	var o options
	flags.StringVar(&o.group, "group", "", "the processor group")
	flags.StringVar(&o.stream, "stream", "", "the input (or, for emit, the output) stream")
	flags.StringVar(&o.table, "table", "", "join: the joined table; view: the table")
	flags.StringVar(&o.lookup, "lookup", "", "join: the looked-up table")
	flags.StringVar(&o.output, "output", "", "join: the output stream")
	flags.StringVar(&o.state, "state", "", "folder of the local tables")
	flags.IntVar(&o.messages, "messages", 0, "stop after this many messages; 0: when stdin closes")
	flags.StringVar(&o.strategy, "strategy", "default",
		"rebalance strategies offered: default (goka's: copartition alone), or a list of "+
			"copartition and range in order of preference")
	flags.StringVar(&o.codec, "codec", "int64", "count: the group table's codec, int64 or string")
	if err := flags.Parse(os.Args[2:]); err != nil {
		fail("%v", err)
	}
	o.brokers = strings.Split(*brokers, ",")
	var err error
	switch mode {
	case "count":
		err = count(o)
	case "join":
		err = join(o)
	case "loop":
		err = loop(o)
	case "emit":
		err = emit(o)
	case "view":
		err = view(o)
	default:
		fail("unknown mode %q", mode)
	}
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "goka-peer: "+format+"\n", args...)
	os.Exit(1)
}

// print writes one JSON line to stdout.
func print(line map[string]interface{}) {
	out, err := json.Marshal(line)
	if err != nil {
		fail("json: %v", err)
	}
	fmt.Println(string(out))
}

// config is goka's default configuration as a user on Kafka 4 runs it: goka's own default
// protocol version (sarama's V2_0_0_0) works against Kafka 4.4, whose oldest versions
// (KIP-896) sarama does not use; the single-node test broker holds one replica. A group
// shared with goka-rs members offers sarama's range strategy too, which librdkafka's members
// offer.
func config(o options) (goka.TopicManagerBuilder, error) {
	cfg := goka.DefaultConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	if o.strategy != "default" {
		if err := offer(cfg, o.strategy); err != nil {
			return nil, err
		}
	}
	goka.ReplaceGlobalConfig(cfg)
	topics := goka.NewTopicManagerConfig()
	topics.Table.Replication = 1
	topics.Stream.Replication = 1
	return goka.TopicManagerBuilderWithConfig(cfg, topics), nil
}

// offer sets the rebalance strategies the processor offers, by name, in order of preference.
func offer(cfg *sarama.Config, names string) error {
	var strategies []sarama.BalanceStrategy
	for _, name := range strings.Split(names, ",") {
		switch name {
		case "copartition":
			strategies = append(strategies, goka.CopartitioningStrategy)
		case "range":
			strategies = append(strategies, sarama.NewBalanceStrategyRange())
		default:
			return fmt.Errorf("unknown strategy %q", name)
		}
	}
	// goka sets the deprecated Strategy to its copartition strategy, and sarama then offers
	// that one alone, whatever GroupStrategies lists.
	cfg.Consumer.Group.Rebalance.Strategy = nil
	cfg.Consumer.Group.Rebalance.GroupStrategies = strategies
	return nil
}

// tally is what a processor handled: shared by its partitions' goroutines.
type tally struct {
	mu       sync.Mutex
	handled  int
	values   []string
	counts   map[string]int64
	headers  map[string]map[string]string
	messages int
	reached  chan struct{}
}

func newTally(messages int) *tally {
	return &tally{
		counts:   map[string]int64{},
		headers:  map[string]map[string]string{},
		messages: messages,
		reached:  make(chan struct{}),
	}
}

// add counts one handled message: its value, the key's count and the key's last headers.
func (t *tally) add(ctx goka.Context, value string, count int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.handled++
	t.values = append(t.values, value)
	t.counts[ctx.Key()] = count
	headers := map[string]string{}
	for name, v := range ctx.Headers() {
		headers[name] = string(v)
	}
	t.headers[ctx.Key()] = headers
	if t.handled == t.messages {
		close(t.reached)
	}
}

func (t *tally) report() map[string]interface{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return map[string]interface{}{
		"event": "done", "handled": t.handled, "values": t.values,
		"counts": t.counts, "headers": t.headers,
	}
}

// run runs a processor of graph g until the tally says stop, prints its assignments as they
// come and its report at the end.
func run(o options, g *goka.GroupGraph, t *tally) error {
	topics, err := config(o)
	if err != nil {
		return err
	}
	p, err := goka.NewProcessor(o.brokers, g,
		goka.WithTopicManagerBuilder(topics),
		goka.WithStorageBuilder(storage.DefaultBuilder(o.state)),
		goka.WithRebalanceCallback(func(a goka.Assignment) {
			partitions := []int{}
			for p := range a {
				partitions = append(partitions, int(p))
			}
			sort.Ints(partitions)
			print(map[string]interface{}{"event": "assigned", "partitions": partitions})
		}))
	if err != nil {
		return fmt.Errorf("new processor: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stop, deadline := t.reached, time.After(limit)
	if o.messages == 0 {
		stop, deadline = stdinClosed(), nil
	}
	select {
	case <-stop:
	case err := <-done:
		return fmt.Errorf("the processor stopped on its own: %v", err)
	case <-deadline:
		return fmt.Errorf("only %d of %d messages within %v", t.report()["handled"], o.messages, limit)
	}
	// Stopping waits for the table writes of what was handled, then commits.
	cancel()
	if err := <-done; err != nil {
		return fmt.Errorf("stopping: %w", err)
	}
	print(t.report())
	return nil
}

// stdinClosed is closed once standard input reaches its end.
func stdinClosed() chan struct{} {
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(closed)
	}()
	return closed
}
