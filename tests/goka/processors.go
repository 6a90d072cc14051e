package main

import (
	"fmt"
	"strings"

	"github.com/lovoo/goka"
	"github.com/lovoo/goka/codec"
)

// count counts the messages of the stream per key in the group table. With -codec string
// the table holds "N visits", which a reader expecting codec.Int64 cannot decode.
func count(o options) error {
	t := newTally(o.messages)
	var table goka.Codec = new(codec.Int64)
	if o.codec == "string" {
		table = new(codec.String)
	}
	g := goka.DefineGroup(goka.Group(o.group),
		goka.Input(goka.Stream(o.stream), new(codec.String), func(ctx goka.Context, msg interface{}) {
			var n int64
			switch v := ctx.Value().(type) {
			case int64:
				n = v
			case string:
				if _, err := fmt.Sscanf(v, "%d visits", &n); err != nil {
					ctx.Fail(fmt.Errorf("row %q of %s: %w", v, ctx.Key(), err))
				}
			}
			n++
			if o.codec == "string" {
				ctx.SetValue(fmt.Sprintf("%d visits", n))
			} else {
				ctx.SetValue(n)
			}
			t.add(ctx, msg.(string), n)
		}),
		goka.Persist(table),
	)
	return run(o, g, t)
}

// loop sends every message, "TO|...", back through the loop topic to the key TO, with the
// whole message as the value; the loopback handler counts per key in the group table.
func loop(o options) error {
	t := newTally(o.messages)
	g := goka.DefineGroup(goka.Group(o.group),
		goka.Input(goka.Stream(o.stream), new(codec.String), func(ctx goka.Context, msg interface{}) {
			to := strings.SplitN(msg.(string), "|", 2)[0]
			ctx.Loopback(to, msg)
		}),
		goka.Loop(new(codec.String), func(ctx goka.Context, msg interface{}) {
			var n int64
			if v := ctx.Value(); v != nil {
				n = v.(int64)
			}
			ctx.SetValue(n + 1)
			t.add(ctx, msg.(string), n+1)
		}),
		goka.Persist(new(codec.Int64)),
	)
	return run(o, g, t)
}

// join answers every message with what the joined table holds for its key and what the
// looked-up table holds for the key its value names, on -output, with the message's
// headers and one of its own.
func join(o options) error {
	t := newTally(o.messages)
	joined, looked := goka.Table(o.table), goka.Table(o.lookup)
	g := goka.DefineGroup(goka.Group(o.group),
		goka.Input(goka.Stream(o.stream), new(codec.String), func(ctx goka.Context, msg interface{}) {
			answer := fmt.Sprintf("%s joined=%s looked-up=%s",
				ctx.Key(), show(ctx.Join(joined)), show(ctx.Lookup(looked, msg.(string))))
			headers := goka.Headers{"answered-by": []byte("goka")}.Merged(ctx.Headers())
			ctx.Emit(goka.Stream(o.output), ctx.Key(), answer, goka.WithCtxEmitHeaders(headers))
			t.add(ctx, msg.(string), 0)
		}),
		goka.Join(joined, new(codec.Int64)),
		goka.Lookup(looked, new(codec.Int64)),
		goka.Output(goka.Stream(o.output), new(codec.String)),
	)
	return run(o, g, t)
}

func show(value interface{}) string {
	if value == nil {
		return "nil"
	}
	return fmt.Sprint(value)
}
