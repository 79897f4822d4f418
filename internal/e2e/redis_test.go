package e2e

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

func redisFor(t *testing.T, url string) (*redis.Options, *redis.Client) {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return opt, c
}
