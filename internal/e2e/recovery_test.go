package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// percentile of sorted samples (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// TestWorkerSIGKILLTasksRunAgainWithinSeconds kills a worker with SIGKILL
// while it runs tasks, several times over, and measures for each in-flight
// task how long after the kill it was running again on the surviving worker.
// The survivor of each round is the victim of the next, so tasks recovered
// once are killed again. Every task is recovered by Conveyor's reaper (its
// last error names the dead worker, asynq's recoverer would say "lease
// expired" and take a minute or more), and every one completes in the end.
//
// The times are logged (p50/p99, recorded in docs/operations.md); the
// deadline of each wait is generous, so a slow CI machine does not fail it.
func TestWorkerSIGKILLTasksRunAgainWithinSeconds(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	victim, _ := p.StartWorker("WORKER_CONCURRENCY=20")

	const rounds, perRound = 5, 3
	var all []string
	var samples []time.Duration
	for round := range rounds {
		for range perRound {
			all = append(all, enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"sleep_ms":9000},"max_retry":10}`).ID)
		}
		// Everything not finished is active on the victim (the only worker).
		before := map[string]int{}
		testenv.Eventually(t, 30*time.Second, func() bool {
			for _, id := range all {
				v := getTask(t, p, id)
				switch v.State {
				case "completed":
					delete(before, id)
				case "active":
					before[id] = v.Retried
				default:
					return false
				}
			}
			return true
		}, "round %d: tasks never all active on the victim", round)
		survivor, _ := p.StartWorker("WORKER_CONCURRENCY=20")
		victim.Kill()
		killed := time.Now()

		pending := maps(before)
		testenv.Eventually(t, 40*time.Second, func() bool {
			for id := range pending {
				v := getTask(t, p, id)
				if v.State == "completed" && v.Retried == before[id] {
					delete(pending, id) // finished on the victim just before the kill
					continue
				}
				if (v.State == "active" || v.State == "completed") && v.Retried > before[id] {
					samples = append(samples, time.Since(killed))
					delete(pending, id)
					if !strings.Contains(v.LastError, "conveyor: worker") || !strings.Contains(v.LastError, "died") {
						t.Errorf("task %s was recovered by something else: last error %q", id, v.LastError)
					}
				}
			}
			return len(pending) == 0
		}, "round %d: %d in-flight tasks never ran again after the kill", round, len(pending))
		victim = survivor
	}
	for _, id := range all {
		waitState(t, p, id, "completed", 60*time.Second)
	}
	slices.Sort(samples)
	t.Logf("worker SIGKILL ×%d: %d in-flight tasks, each running again on the surviving worker after p50 %s, p99 %s, max %s; %d/%d tasks completed, 0 lost",
		rounds, len(samples), percentile(samples, 0.5).Round(10*time.Millisecond), percentile(samples, 0.99).Round(10*time.Millisecond),
		samples[len(samples)-1].Round(10*time.Millisecond), len(all), len(all))
}

func maps(m map[string]int) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// TestFrozenWorkerKeepsItsTasks: a worker stopped with SIGSTOP for 5 s (a
// long GC pause, a CPU-starved pod) is slow, not dead. Its task is not
// taken away while another worker stands by, runs exactly once, and
// completes on the frozen worker once it resumes.
func TestFrozenWorkerKeepsItsTasks(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	frozen, _ := p.StartWorker()
	task := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"sleep_ms":4000}}`)
	waitState(t, p, task.ID, "active", 30*time.Second)
	other, _ := p.StartWorker()

	frozen.Signal(syscall.SIGSTOP)
	time.Sleep(5 * time.Second) // the stall under test, not a wait for a condition
	if v := getTask(t, p, task.ID); v.State != "active" || v.Retried != 0 {
		t.Errorf("after a 5 s freeze the task is %s (retried %d), want still active on the frozen worker", v.State, v.Retried)
	}
	frozen.Signal(syscall.SIGCONT)

	v := waitState(t, p, task.ID, "completed", 60*time.Second)
	if v.Retried != 0 || v.LastError != "" {
		t.Errorf("task completed with retried %d, last error %q: it was taken from the frozen worker", v.Retried, v.LastError)
	}
	// Let the other worker's reaper look a few more times.
	time.Sleep(3 * time.Second)
	if out := other.Output(); strings.Contains(out, task.ID) {
		t.Errorf("the standby worker touched %s:\n%s", task.ID, out)
	}
	if n := strings.Count(frozen.Output(), fmt.Sprintf(`"task_id":%q`, task.ID)); n == 0 {
		t.Errorf("the frozen worker never logged %s", task.ID)
	}
}
