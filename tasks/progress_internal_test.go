package tasks

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
)

// recorder stands in for asynq's ResultWriter: it keeps the last write, as
// the task's result field in Redis does.
type recorder struct {
	mu     sync.Mutex
	last   []byte
	writes int
}

func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = append([]byte(nil), b...)
	r.writes++
	return len(b), nil
}

func TestProgressAndResultShareTheEnvelope(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	ctx := withState(context.Background(), rec)

	if err := ReportProgress(ctx, 1, 3, "step one"); err != nil {
		t.Fatal(err)
	}
	res, p := DecodeResult(rec.last)
	if res != nil || p == nil || p.Done != 1 || p.Total != 3 || p.Message != "step one" || p.UpdatedAt.IsZero() {
		t.Fatalf("after progress: result %s, progress %+v", res, p)
	}

	if err := SetResult(ctx, map[string]int{"deleted": 5}); err != nil {
		t.Fatal(err)
	}
	res, p = DecodeResult(rec.last)
	if string(res) != `{"deleted":5}` {
		t.Errorf("result = %s", res)
	}
	if p == nil || p.Done != 1 {
		t.Errorf("the result dropped the progress: %+v", p)
	}

	if err := ReportProgress(ctx, 3, 3, "done"); err != nil {
		t.Fatal(err)
	}
	res, p = DecodeResult(rec.last)
	if string(res) != `{"deleted":5}` || p == nil || p.Done != 3 {
		t.Errorf("progress after the result: result %s, progress %+v", res, p)
	}
}

func TestProgressFromManyGoroutines(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	ctx := withState(context.Background(), rec)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ReportProgress(ctx, int64(i), 20, ""); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if rec.writes != 20 {
		t.Errorf("writes = %d, want 20", rec.writes)
	}
	if !json.Valid(rec.last) {
		t.Errorf("last write is not JSON: %s", rec.last)
	}
}

func TestDecodeResult(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, stored, result string
		progress             bool
	}{
		{"empty", "", "", false},
		{"bare JSON from elsewhere", `{"pong":true}`, `{"pong":true}`, false},
		{"bare text", "plain", "plain", false},
		{"envelope without result", `{"conveyor_result":1,"progress":{"done":1,"total":2,"updated_at":"2026-01-01T00:00:00Z"}}`, "", true},
		{"envelope", `{"conveyor_result":1,"result":[1,2]}`, "[1,2]", false},
		{"unknown envelope version", `{"conveyor_result":2,"result":1}`, `{"conveyor_result":2,"result":1}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, p := DecodeResult([]byte(c.stored))
			if string(res) != c.result || (p != nil) != c.progress {
				t.Errorf("DecodeResult(%s) = %s, %+v", c.stored, res, p)
			}
		})
	}
}

func TestOutsideAWorkerProgressIsANoOp(t *testing.T) {
	t.Parallel()
	if err := ReportProgress(context.Background(), 1, 2, "x"); err != nil {
		t.Error(err)
	}
	if err := SetResult(context.Background(), 1); err != nil {
		t.Error(err)
	}
}
