package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/lovoo/goka"
	"github.com/lovoo/goka/codec"
	"github.com/lovoo/goka/storage"
)

// view prints every row of the table (codec.Int64) once goka's View recovered it.
func view(o options) error {
	topics, err := config(o)
	if err != nil {
		return err
	}
	v, err := goka.NewView(o.brokers, goka.Table(o.table), new(codec.Int64),
		goka.WithViewTopicManagerBuilder(topics),
		goka.WithViewStorageBuilder(storage.DefaultBuilder(o.state)))
	if err != nil {
		return fmt.Errorf("new view: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	for !v.Recovered() {
		select {
		case err := <-done:
			return fmt.Errorf("the view stopped before it recovered: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	it, err := v.Iterator()
	if err != nil {
		return fmt.Errorf("iterator: %w", err)
	}
	rows := map[string]interface{}{}
	keys := []string{}
	for it.Next() {
		value, err := it.Value()
		if err != nil {
			return fmt.Errorf("row %s: %w", it.Key(), err)
		}
		rows[it.Key()] = value
		keys = append(keys, it.Key())
	}
	sort.Strings(keys)
	cancel()
	if err := <-done; err != nil {
		return fmt.Errorf("stopping: %w", err)
	}
	print(map[string]interface{}{"event": "done", "rows": rows, "keys": keys})
	return nil
}
