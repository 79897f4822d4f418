// Package stack grows a goroutine's stack where that is cheap.
//
// asynq runs every task on two goroutines of its own (one waits for the
// handler and then acknowledges the task in Redis, one runs the handler),
// both started with a small stack. Their paths through Conveyor's handler
// chain and through go-redis need more, so the runtime grew those stacks
// once or twice per task, each time in the middle of a deep call (a read
// from the Redis connection, a malloc under the handler) where it copies
// and re-adjusts every frame above: about a tenth of the worker's CPU in a
// drain of pings. Calling Grow near the top of such a goroutine makes the
// runtime grow the stack there instead, where there is almost nothing to
// copy, to a size that the common path fits in. CockroachDB's growstack
// package does the same for its deep storage paths.
package stack

// reserve is Grow's frame. With the few frames above it, a goroutine's
// stack becomes 16 KB: the largest size the runtime keeps in its per-CPU
// caches, so allocating it stays cheap. On a stack that is already large
// enough, Grow only zeroes its frame.
const reserve = 6 << 10

// Grow makes sure the calling goroutine has about reserve bytes of stack
// free below the caller.
//
//go:noinline
func Grow() {
	var buf [reserve]byte
	touch(buf[:])
}

//go:noinline
func touch(b []byte) { b[len(b)-1] = 1 }

// deepReserve is GrowDeep's frame: the stack becomes 32 KB.
const deepReserve = 14 << 10

// GrowDeep is Grow for a goroutine known to go deeper than 16 KB, such as
// a task handler that decodes JSON by reflection, renders templates and
// talks SMTP: called where few frames sit above it, the growth to 32 KB
// copies those few rather than the whole deep call that would otherwise
// need it (in the orders benchmark, the JSON decode of an order's items).
//
//go:noinline
func GrowDeep() {
	var buf [deepReserve]byte
	touch(buf[:])
}
