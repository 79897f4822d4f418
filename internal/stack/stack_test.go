package stack

import (
	"sync"
	"testing"
)

// Grow runs on fresh goroutines and deep stacks alike and leaves the
// caller's frames intact across the growth it causes.
func TestGrowKeepsTheCallersFrames(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for depth := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := recurse(depth, depth); got != depth*(depth+1)/2 {
				t.Errorf("depth %d: sum %d, want %d", depth, got, depth*(depth+1)/2)
			}
		}()
	}
	wg.Wait()
}

// recurse keeps n in each frame, calls Grow at the bottom and sums the
// frames' values on the way back up.
func recurse(n, top int) int {
	local := n
	if n == 0 {
		Grow()
		GrowDeep()
		return 0
	}
	return local + recurse(n-1, top)
}
