package store

import (
	"context"
	"time"
)

// APIKey is a row of api_keys. Only the key's hash is stored; the key itself
// is shown once, when created.
type APIKey struct {
	ID         int64      `db:"id" json:"id"`
	Name       string     `db:"name" json:"name"`
	KeyHash    string     `db:"key_hash" json:"-"`
	CreatedAt  time.Time  `db:"created_at" json:"created_at"`
	LastUsedAt *time.Time `db:"last_used_at" json:"last_used_at"`
}

// APIKeys is the api_keys repository.
type APIKeys struct{ q Querier }

// NewAPIKeys returns a repository over q.
func NewAPIKeys(q Querier) *APIKeys { return &APIKeys{q: q} }

// Create stores a key by name and hash. A duplicate name is ErrConflict.
func (r *APIKeys) Create(ctx context.Context, name, hash string) (APIKey, error) {
	var k APIKey
	err := r.q.GetContext(ctx, &k,
		`INSERT INTO api_keys (name, key_hash) VALUES ($1, $2) RETURNING *`, name, hash)
	return k, mapErr(err, "create api key "+name)
}

// ByHash returns the key whose hash is hash and records its use in
// last_used_at, to the minute: a busy service key costs one indexed read per
// request, not a write (and a WAL flush) per request.
func (r *APIKeys) ByHash(ctx context.Context, hash string) (APIKey, error) {
	var k APIKey
	if err := r.q.GetContext(ctx, &k, `SELECT * FROM api_keys WHERE key_hash = $1`, hash); err != nil {
		return k, mapErr(err, "find api key")
	}
	if k.LastUsedAt != nil && time.Since(*k.LastUsedAt) < time.Minute {
		return k, nil
	}
	err := r.q.GetContext(ctx, &k.LastUsedAt,
		`UPDATE api_keys SET last_used_at = now() WHERE id = $1 RETURNING last_used_at`, k.ID)
	return k, mapErr(err, "record api key use")
}
