package main

import (
	"sort"
	"testing"
	"time"
)

func TestChainGaps(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 18, 0, 0, 0, time.UTC)
	at := func(msec float64) *time.Time {
		v := t0.Add(time.Duration(msec * float64(time.Millisecond)))
		return &v
	}
	steps := []stepTimes{
		{StepID: "s0", State: "succeeded", StartedAt: at(0), FinishedAt: at(1)},
		{StepID: "s1", State: "succeeded", StartedAt: at(4), FinishedAt: at(5)},     // gap 3
		{StepID: "s2", State: "succeeded", StartedAt: at(12), FinishedAt: at(13)},   // gap 7
		{StepID: "s3", State: "succeeded", StartedAt: at(14.5), FinishedAt: at(20)}, // gap 1.5
	}
	gaps, err := chainGaps(steps)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{3, 7, 1.5}
	if len(gaps) != len(want) {
		t.Fatalf("gaps = %v, want %v", gaps, want)
	}
	for i := range want {
		if gaps[i] != want[i] {
			t.Fatalf("gaps = %v, want %v", gaps, want)
		}
	}
	sort.Float64s(gaps)
	if p50, p99 := percentile(gaps, 50), percentile(gaps, 99); p50 != 3 || p99 != 7 {
		t.Fatalf("p50 %v p99 %v, want 3 and 7", p50, p99)
	}
}

func TestChainGapsRefusesUnfinishedSteps(t *testing.T) {
	now := time.Now()
	for name, steps := range map[string][]stepTimes{
		"not started": {{StepID: "a", State: "succeeded", StartedAt: &now, FinishedAt: &now}, {StepID: "b", State: "succeeded", FinishedAt: &now}},
		"failed":      {{StepID: "a", State: "succeeded", StartedAt: &now, FinishedAt: &now}, {StepID: "b", State: "failed", StartedAt: &now, FinishedAt: &now}},
		"one step":    {{StepID: "a", State: "succeeded", StartedAt: &now, FinishedAt: &now}},
	} {
		if gaps, err := chainGaps(steps); err == nil {
			t.Errorf("%s: gaps %v, want an error", name, gaps)
		}
	}
}

func TestPercentileNearestRank(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	for _, c := range []struct{ p, want float64 }{{50, 50}, {99, 99}, {100, 100}, {1, 1}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("percentile(1..100, %v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %v", got)
	}
}
