package limits

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// BenchmarkAdmit is the limiter's cost per task start: nothing for a type
// without limits (no Redis call), one script for a rate limit, two (plus
// the release) for a concurrency limit, against the local Redis.
func BenchmarkAdmit(b *testing.B) {
	_, rdb := testenv.Redis(b)
	store := NewStore(rdb, map[string]Limits{
		"none":        {},
		"rate":        {Rate: &Rate{Limit: 1_000, Per: Duration(time.Millisecond * 100), Burst: 1_000_000}},
		"rate_keyed":  {Rate: &Rate{Limit: 10_000, Per: Duration(time.Second), Burst: 1_000_000, Key: "user_id"}},
		"concurrency": {Concurrency: &Concurrency{Max: 1_000_000}},
	})
	e := NewEnforcer(rdb, store, testenv.Logger(b), nil)
	ctx := context.Background()
	for _, typ := range []string{"none", "rate", "rate_keyed", "concurrency"} {
		b.Run(typ, func(b *testing.B) {
			for i := range b.N {
				release, err := e.Admit(ctx, typ, fmt.Sprint(i), []byte(`{"user_id":42}`))
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
		})
	}
}
