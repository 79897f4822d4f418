package httpapi

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/store"
)

// apiKeyTTL is how long a verified API key is trusted without asking
// PostgreSQL again. Looking the key up on every request cost a round trip to
// PostgreSQL per request (BenchmarkAPIEnqueueTask: most of its time); with
// the cache a busy service key costs one lookup per apiKeyTTL. The price: a
// key deleted from api_keys keeps working for at most apiKeyTTL in each api
// process.
const apiKeyTTL = 2 * time.Second

// maxCachedKeys bounds the cache; only keys that exist are cached, so it is
// emptied only if that many live keys are used within apiKeyTTL.
const maxCachedKeys = 10_000

// apiKeyCache remembers the names of API keys, by hash, for apiKeyTTL.
// Unknown keys are never cached: each one is a lookup, as before.
type apiKeyCache struct {
	db  *sqlx.DB
	ttl time.Duration

	mu   sync.RWMutex
	keys map[string]cachedKey
}

type cachedKey struct {
	name  string
	until time.Time
}

func newAPIKeyCache(db *sqlx.DB, ttl time.Duration) *apiKeyCache {
	return &apiKeyCache{db: db, ttl: ttl, keys: map[string]cachedKey{}}
}

// name returns the name of the key whose hash is hash, store.ErrNotFound if
// there is none.
func (c *apiKeyCache) name(ctx context.Context, hash string) (string, error) {
	now := time.Now()
	c.mu.RLock()
	k, ok := c.keys[hash]
	c.mu.RUnlock()
	if ok && now.Before(k.until) {
		return k.name, nil
	}
	key, err := store.NewAPIKeys(c.db).ByHash(ctx, hash)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			delete(c.keys, hash)
		}
		return "", err
	}
	if len(c.keys) >= maxCachedKeys {
		clear(c.keys)
	}
	c.keys[hash] = cachedKey{name: key.Name, until: now.Add(c.ttl)}
	return key.Name, nil
}
