package observe

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// LogBuffer batches log lines into fewer writes: the worker logs a line per
// task attempt, and one write syscall per line was a measurable share of a
// drain's CPU. A line waits at most the flush interval; a record of level
// Warn or above flushes everything before it at once (NewBufferedLogger),
// so problems are never held back. The price: a process killed with
// SIGKILL loses the info lines of its last interval. Close flushes and
// makes later writes direct.
type LogBuffer struct {
	mu     sync.Mutex
	w      io.Writer
	buf    []byte
	every  time.Duration
	timer  *time.Timer // pending flush, nil when the buffer is empty
	closed bool
}

// logBufferMax is how much is held before a write flushes at once.
const logBufferMax = 64 << 10

// NewBufferedLogger is NewLogger writing through a LogBuffer that flushes
// every interval (and on Warn and above). Call Close on the buffer last.
func NewBufferedLogger(w io.Writer, format, level string, every time.Duration) (*slog.Logger, *LogBuffer) {
	b := &LogBuffer{w: w, every: every}
	l := NewLogger(b, format, level)
	return slog.New(flushingHandler{Handler: l.Handler(), buf: b}), b
}

// Write implements io.Writer. slog hands it one whole line per call.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return b.w.Write(p)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= logBufferMax {
		return len(p), b.flushLocked()
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(b.every, func() { _ = b.Flush() })
	}
	return len(p), nil
}

// Flush writes what is buffered.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *LogBuffer) flushLocked() error {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Close flushes; later writes go straight through.
func (b *LogBuffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return b.flushLocked()
}

// flushingHandler flushes the buffer after every record of level Warn or
// above, so warnings and errors (and the lines before them) are written at
// once.
type flushingHandler struct {
	slog.Handler
	buf *LogBuffer
}

func (h flushingHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		if ferr := h.buf.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (h flushingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return flushingHandler{Handler: h.Handler.WithAttrs(attrs), buf: h.buf}
}

func (h flushingHandler) WithGroup(name string) slog.Handler {
	return flushingHandler{Handler: h.Handler.WithGroup(name), buf: h.buf}
}
