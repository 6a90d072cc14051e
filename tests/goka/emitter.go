package main

import (
	"fmt"

	"github.com/lovoo/goka"
	"github.com/lovoo/goka/codec"
)

// emit sends -messages messages to the stream with goka's Emitter: key user-(i%20), value
// /page/i, headers origin=goka and seq=i.
func emit(o options) error {
	e, err := goka.NewEmitter(o.brokers, goka.Stream(o.stream), new(codec.String))
	if err != nil {
		return fmt.Errorf("new emitter: %w", err)
	}
	for i := 0; i < o.messages; i++ {
		headers := goka.Headers{"origin": []byte("goka"), "seq": []byte(fmt.Sprint(i))}
		key, value := fmt.Sprintf("user-%d", i%20), fmt.Sprintf("/page/%d", i)
		if err := e.EmitSyncWithHeaders(key, value, headers); err != nil {
			return fmt.Errorf("emit %d: %w", i, err)
		}
	}
	if err := e.Finish(); err != nil {
		return fmt.Errorf("finish: %w", err)
	}
	print(map[string]interface{}{"event": "done", "emitted": o.messages})
	return nil
}
