package httpapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/store"
)

// HeaderIdempotencyKey names the request header; HeaderIdempotentReplayed is
// set to "true" on a response replayed from an earlier request.
const (
	HeaderIdempotencyKey     = "Idempotency-Key"
	HeaderIdempotentReplayed = "Idempotent-Replayed"
)

var validIdempotencyKey = regexp.MustCompile(`^[\x21-\x7e]{1,255}$`)

// idempotency is a request's Idempotency-Key, scoped to its caller, with a
// hash of what was asked (method, path and JSON body).
type idempotency struct {
	owner, key, hash string
	ttl              time.Duration
	reservedAt       time.Time // set by reserve
}

// taskID derives the task ID of the request's task: an HMAC under the
// server's secret, so no caller can predict (and squat) another's, of the
// owner, the key and when this lifetime of the key began, so a key used
// again after it expired starts afresh instead of colliding with the task
// of its previous life (still kept in Redis for its retention).
func (k *idempotency) taskID(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	io.WriteString(m, k.owner+"\x00"+k.key+"\x00"+strconv.FormatInt(k.reservedAt.UnixNano(), 10))
	return IdempotentTaskIDPrefix + hex.EncodeToString(m.Sum(nil)[:16])
}

// IdempotentTaskIDPrefix starts every task ID derived from an
// Idempotency-Key; callers may not choose such IDs (queue.ReservedTaskID).
const IdempotentTaskIDPrefix = "idem-"

// readIdempotency returns nil when the request has no Idempotency-Key.
// Otherwise it reads the body to hash it and puts it back for bind.
func readIdempotency(c echo.Context, ttl time.Duration) (*idempotency, error) {
	key := c.Request().Header.Get(HeaderIdempotencyKey)
	if key == "" {
		return nil, nil
	}
	if !validIdempotencyKey.MatchString(key) {
		return nil, errValidation(map[string]string{HeaderIdempotencyKey: "must be 1-255 printable ASCII characters without spaces"})
	}
	req := c.Request()
	raw, err := io.ReadAll(req.Body)
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return nil, errTooLarge(maxErr.Limit)
	}
	if err != nil {
		return nil, errBadRequest("reading the body: " + err.Error())
	}
	req.Body = io.NopCloser(bytes.NewReader(raw))
	// Equal JSON documents hash equally whatever their whitespace.
	var compact bytes.Buffer
	if json.Compact(&compact, raw) == nil {
		raw = compact.Bytes()
	}
	h := sha256.New()
	io.WriteString(h, req.Method+" "+c.Path()+"\x00")
	h.Write(raw)
	return &idempotency{owner: currentPrincipal(c).owner(), key: key,
		hash: hex.EncodeToString(h.Sum(nil)), ttl: ttl}, nil
}

// errIdempotencyMismatch: the key was used for a different request.
func errIdempotencyMismatch() *APIError {
	return &APIError{Status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused",
		Message: "this Idempotency-Key was used with a different request body",
		Fields:  map[string]string{HeaderIdempotencyKey: "already used for a different request"}}
}

func errIdempotencyInProgress() *APIError {
	return &APIError{Status: http.StatusConflict, Code: "idempotency_key_in_progress",
		Message: "a request with this Idempotency-Key is still being processed; retry shortly"}
}

// reserve claims the key through q. It returns (true, nil) when the caller
// should go on and do the work, and notes when this lifetime of the key
// began (k.reservedAt). Otherwise it has written the response: the replay
// of the first one, or an error.
func (k *idempotency) reserve(c echo.Context, q store.Querier) (proceed bool, err error) {
	reserved, rec, err := store.NewIdempotency(q).Reserve(c.Request().Context(), k.owner, k.key, k.hash, k.ttl)
	switch {
	case err != nil:
		return false, err
	case reserved:
		k.reservedAt = rec.CreatedAt
		return true, nil
	case rec.RequestHash != k.hash:
		return false, errIdempotencyMismatch()
	case rec.Status == 0:
		return false, errIdempotencyInProgress()
	}
	c.Response().Header().Set(HeaderIdempotentReplayed, "true")
	return false, c.JSONBlob(rec.Status, rec.Body)
}

// complete stores the response to replay.
func (k *idempotency) complete(ctx context.Context, q store.Querier, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return store.NewIdempotency(q).Complete(ctx, k.owner, k.key, status, b)
}

// ctxIdempotencyTaskID carries a task ID derived from the idempotency key to
// handleTaskCreate. A request that crashes between enqueueing and recording
// its response leaves the key "in progress" until it expires (retries get
// 409), and a request whose answer was sent is never released, so each
// lifetime of a key enqueues at most one task; the ID makes that task easy
// to find and refuses a second enqueue with the same reservation.
const ctxIdempotencyTaskID = "idempotency_task_id"

// idempotent makes POST /api/v1/tasks honour Idempotency-Key: the first 2xx
// response is stored and replayed for the same key and body; a different
// body is 422; a failed request frees the key. Enqueueing is a Redis side
// effect outside any transaction, so the key is reserved first (a concurrent
// duplicate gets 409) and the task gets a task ID derived from the key
// (unless the caller chose one), which asynq deduplicates.
func idempotent(d *sqlx.DB, ttl time.Duration, secret []byte) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			k, err := readIdempotency(c, ttl)
			if err != nil || k == nil {
				if err != nil {
					return err
				}
				return next(c)
			}
			if proceed, err := k.reserve(c, d); !proceed {
				return err
			}
			c.Set(ctxIdempotencyTaskID, k.taskID(secret))

			rec := &recorder{ResponseWriter: c.Response().Writer}
			c.Response().Writer = rec
			ctx := context.WithoutCancel(c.Request().Context())
			// A panic in the handler frees the key too (then re-panics for
			// the recover middleware); otherwise a retry would get 409 "in
			// progress" until the key expired.
			done := false
			defer func() {
				if !done {
					_ = store.NewIdempotency(d).Release(ctx, k.owner, k.key)
				}
			}()
			err = next(c)
			done = true
			status := c.Response().Status
			answered := c.Response().Committed && status >= 200 && status <= 299
			if !answered && (err != nil || status < 200 || status > 299) {
				if rErr := store.NewIdempotency(d).Release(ctx, k.owner, k.key); rErr != nil {
					return errors.Join(err, rErr)
				}
				return err
			}
			return store.NewIdempotency(d).Complete(ctx, k.owner, k.key, status, rec.body.Bytes())
		}
	}
}

// recorder keeps a copy of the response body.
type recorder struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// idempotentTaskID is the task ID derived from the request's
// Idempotency-Key, or "" without one; a task_id the caller chose wins.
func idempotentTaskID(c echo.Context) string {
	id, _ := c.Get(ctxIdempotencyTaskID).(string)
	return id
}
