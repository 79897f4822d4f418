package observe_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for the flush timer's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Info lines are written in batches within the interval; a warning
// flushes itself and everything before it at once; after Close lines go
// straight through.
func TestBufferedLogger(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	// An hour: nothing but a warning or Close can flush during the test.
	log, buf := observe.NewBufferedLogger(&out, "text", "info", time.Hour)
	log.With("service", "worker").Info("task succeeded", "task_id", "a")
	log.Debug("not at this level")
	if s := out.String(); s != "" {
		t.Fatalf("an info line was written at once: %q", s)
	}
	log.Warn("task failed, will retry", "task_id", "b")
	if s := out.String(); !strings.Contains(s, "task_id=a") || !strings.Contains(s, "task_id=b") || strings.Index(s, "task_id=a") > strings.Index(s, "task_id=b") {
		t.Fatalf("after a warning the log holds %q, want both lines in order", s)
	}
	log.Info("held", "task_id", "c")
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	log.Info("after close", "task_id", "d")
	if s := out.String(); !strings.Contains(s, "task_id=c") || !strings.Contains(s, "task_id=d") {
		t.Fatalf("Close did not flush, or a later line was held: %q", s)
	}

	// With a short interval a lone info line is written by the timer.
	var timed syncBuffer
	log, buf = observe.NewBufferedLogger(&timed, "json", "info", 10*time.Millisecond)
	defer buf.Close()
	log.Info("task succeeded", "task_id", "e")
	testenv.Eventually(t, 5*time.Second, func() bool { return strings.Contains(timed.String(), `"task_id":"e"`) },
		"the buffered info line was never flushed")
}
