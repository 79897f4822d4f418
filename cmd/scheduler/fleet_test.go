package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// TestWholeFleetDownCatchesUpWithinWindow: every scheduler replica is
// killed and none runs for several ticks. When one starts again it fires
// each missed tick younger than SCHEDULER_CATCHUP_WINDOW once, skips (and
// logs) the older ones, and then keeps time: never a burst of every missed
// tick, never a tick twice.
func TestWholeFleetDownCatchesUpWithinWindow(t *testing.T) {
	t.Parallel()
	const window = 3 // seconds; the schedule fires every second
	c := newCluster(t, everySecond, fmt.Sprintf("SCHEDULER_CATCHUP_WINDOW=%ds", window))
	c.start("s1")
	c.start("s2")
	testenv.Eventually(t, 20*time.Second, func() bool { return c.leader() != "" && len(c.ticks("every")) >= 3 },
		"no leader firing")
	for _, id := range []string{"s1", "s2"} {
		c.procs[id].Kill()
	}
	down := time.Now()
	lastBefore := maxTick(c.ticks("every"))
	time.Sleep(8 * time.Second) // the fleet is down: 8 ticks go by
	restart := time.Now()
	back := c.start("s3")
	testenv.Eventually(t, 30*time.Second, func() bool { return maxTick(c.ticks("every")) >= time.Now().Unix()-1 },
		"s3 does not keep time after the restart")
	time.Sleep(3 * time.Second)
	if err := back.Stop(20 * time.Second); err != nil {
		t.Errorf("s3: %v", err)
	}

	ticks := c.ticks("every")
	// Missed ticks: after the last one fired before the outage, before the
	// restart. Only those within the window of the restart may fire.
	var caughtUp, tooOld []int64
	for _, tick := range ticks {
		if tick > lastBefore && tick < restart.Unix() {
			caughtUp = append(caughtUp, tick)
			if tick < restart.Unix()-window-1 {
				tooOld = append(tooOld, tick)
			}
		}
	}
	if len(tooOld) > 0 {
		t.Errorf("ticks older than the %ds catch-up window were fired after the restart: %v", window, tooOld)
	}
	if len(caughtUp) == 0 {
		t.Errorf("no missed tick within the window was caught up (last before %d, restart %d, ticks %v)", lastBefore, restart.Unix(), ticks)
	}
	enq, _ := c.fires()
	for id, n := range enq {
		if n != 1 {
			t.Errorf("%s enqueued %d times", id, n)
		}
	}
	if n := c.pending(); n != int64(len(ticks)) {
		t.Errorf("pending tasks = %d, distinct ticks = %d: a tick was enqueued twice", n, len(ticks))
	}
	if !strings.Contains(back.Output(), "missed ticks older than the catch-up window skipped") {
		t.Errorf("s3 did not log the ticks it skipped:\n%s", back.Output())
	}
	missed := restart.Unix() - lastBefore - 1
	t.Logf("scheduler fleet down %s (%d ticks missed): %d caught up after the restart (window %ds), %d skipped and logged, 0 fired twice",
		restart.Sub(down).Round(100*time.Millisecond), missed, len(caughtUp), window, missed-int64(len(caughtUp)))
}

func maxTick(ticks []int64) int64 {
	if len(ticks) == 0 {
		return 0
	}
	return ticks[len(ticks)-1]
}
