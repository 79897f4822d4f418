package tasks_test

import (
	"testing"

	"github.com/conveyor-run/conveyor/tasks"
)

// BenchmarkDecodeStrict is the per-request payload validation cost in the API.
func BenchmarkDecodeStrict(b *testing.B) {
	reg := tasks.All()
	payload := []byte(`{"order_id":12345}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Decode(tasks.TypeOrderProcess, payload); err != nil {
			b.Fatal(err)
		}
	}
}
