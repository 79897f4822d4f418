package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
)

// runRawWorker is `loadgen rawworker`: the raw asynq anchor, an
// asynq.Server with nothing of Conveyor's (no registry, no middleware, no
// logging) and the handler -mode asks for:
//
//	noop    return nil
//	result  write a small result, as Conveyor's system:ping does
//	stamp   write the handler's start time (Unix ns), for pickup latency
//
// It prints "ready" on stdout once the server runs and stops on SIGTERM.
func runRawWorker(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("rawworker", flag.ContinueOnError)
	url := fs.String("redis", "", "Redis URL")
	concurrency := fs.Int("concurrency", 100, "asynq Concurrency")
	queue := fs.String("queue", "default", "the one queue to serve")
	mode := fs.String("mode", "noop", "noop, result or stamp")
	poll := fs.Duration("poll", 0, "asynq TaskCheckInterval (0: asynq's default, 1s)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (it has no side port) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	opt, err := asynq.ParseRedisURI(*url)
	if err != nil {
		return err
	}
	var h asynq.HandlerFunc
	switch *mode {
	case "noop":
		h = func(context.Context, *asynq.Task) error { return nil }
	case "result":
		h = func(_ context.Context, t *asynq.Task) error {
			_, err := t.ResultWriter().Write([]byte(`{"pong":true}`))
			return err
		}
	case "stamp":
		h = func(_ context.Context, t *asynq.Task) error {
			_, err := t.ResultWriter().Write(strconv.AppendInt(nil, time.Now().UnixNano(), 10))
			return err
		}
	default:
		return fmt.Errorf("unknown -mode %q", *mode)
	}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency: *concurrency, Queues: map[string]int{*queue: 1},
		LogLevel: asynq.WarnLevel, TaskCheckInterval: *poll,
	})
	if err := srv.Start(h); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	srv.Shutdown()
	return nil
}
