package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// ticksSince returns the ticks of schedule name in Redis that are >= from.
func ticksSince(t *testing.T, rdb *redis.Client, name string, from int64) []int64 {
	t.Helper()
	prefix := "asynq:{default}:t:schedule:" + name + ":"
	keys, err := rdb.Keys(context.Background(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, k := range keys {
		n, err := strconv.ParseInt(strings.TrimPrefix(k, prefix), 10, 64)
		if err == nil && n >= from {
			out = append(out, n)
		}
	}
	return out
}

// Creating, changing and disabling a schedule through the API while two
// schedulers run: the firing follows within the sync interval.
func TestAPIChangesFollowWithinSyncInterval(t *testing.T) {
	t.Parallel()
	const sync = 2 * time.Second
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true,
		Env: []string{"SCHEDULER_LEASE_TTL=3s", "SCHEDULE_SYNC_INTERVAL=" + sync.String()}})
	p.StartScheduler("SCHEDULER_ID=a")
	p.StartScheduler("SCHEDULER_ID=b")
	opt, err := redis.ParseURL(p.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	slack := 3 * time.Second // 2 noisy cores

	// Create.
	created := time.Now()
	if code, body := p.Do("POST", "/api/v1/schedules", map[string]any{"name": "live", "spec": "@every 1s", "task_type": "system:ping"}, nil); code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	testenv.Eventually(t, sync+slack, func() bool { return len(ticksSince(t, rdb, "live", 0)) > 0 },
		"created schedule not firing within the sync interval")
	t.Logf("created → first fire: %s", time.Since(created).Round(time.Millisecond))

	// Change: every 2s, so only even ticks from the change on.
	changed := time.Now()
	if code, body := p.Do("PATCH", "/api/v1/schedules/live", map[string]any{"spec": "@every 2s"}, nil); code != http.StatusOK {
		t.Fatalf("patch: %d %s", code, body)
	}
	settled := changed.Add(sync + slack).Unix()
	testenv.Eventually(t, sync+slack+10*time.Second, func() bool { return len(ticksSince(t, rdb, "live", settled)) >= 3 },
		"changed schedule not firing")
	for _, tick := range ticksSince(t, rdb, "live", settled) {
		if tick%2 != 0 {
			t.Errorf("tick %d after the change to @every 2s", tick)
		}
	}
	// The first tick of the new spec: the change took effect.
	var firstEven int64
	for tick := changed.Unix(); tick <= settled; tick++ {
		if odd := ticksSince(t, rdb, "live", tick); len(odd) > 0 {
			allEven := true
			for _, x := range odd {
				allEven = allEven && x%2 == 0
			}
			if allEven {
				firstEven = tick
				break
			}
		}
	}
	t.Logf("changed → only @every 2s ticks from %ds after the change", firstEven-changed.Unix())

	// Disable: nothing fires once the sync interval has passed.
	disabled := time.Now()
	if code, body := p.Do("PATCH", "/api/v1/schedules/live", map[string]any{"enabled": false}, nil); code != http.StatusOK {
		t.Fatalf("disable: %d %s", code, body)
	}
	quiet := disabled.Add(sync + slack).Unix()
	time.Sleep(time.Until(time.Unix(quiet, 0).Add(3 * time.Second)))
	if late := ticksSince(t, rdb, "live", quiet); len(late) > 0 {
		t.Errorf("ticks %v fired after disabling at %d", late, disabled.Unix())
	}
	last := ticksSince(t, rdb, "live", disabled.Unix()-1)
	t.Logf("disabled → ticks at or after the change: %v", last)

	var list struct {
		Schedules []struct {
			Name        string     `json:"name"`
			LastFiredAt *time.Time `json:"last_fired_at"`
			LastTaskID  string     `json:"last_task_id"`
			NextFireAt  *time.Time `json:"next_fire_at"`
		} `json:"schedules"`
		Scheduler struct {
			Leader string `json:"leader"`
		} `json:"scheduler"`
	}
	if code, body := p.Do("GET", "/api/v1/schedules", nil, &list); code != http.StatusOK || len(list.Schedules) != 1 {
		t.Fatalf("list: %d %s", code, body)
	}
	s := list.Schedules[0]
	if s.LastFiredAt == nil || !strings.HasPrefix(s.LastTaskID, "schedule:live:") || s.NextFireAt != nil {
		t.Errorf("listed schedule = %+v", s)
	}
	if !strings.HasPrefix(list.Scheduler.Leader, "a/") && !strings.HasPrefix(list.Scheduler.Leader, "b/") {
		t.Errorf("leader = %q", list.Scheduler.Leader)
	}
}
