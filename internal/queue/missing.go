package queue

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/conveyor-run/conveyor/internal/store"
)

// MissingTask says why a task ID is not in Redis: GET /api/v1/tasks/{id}
// answers with it instead of a bare "not found". It matches ErrNotFound.
type MissingTask struct {
	ID string
	// Reason is "expired" (its outbox row was sent: the task ran and its
	// record is gone), "not_enqueued" (its outbox row is still waiting, or
	// dead) or "unknown" (no outbox row: never enqueued under this ID, or
	// enqueued directly and expired).
	Reason string
	Type   string        // the task's type, when known ("" otherwise)
	Kept   time.Duration // how long its type keeps a completed task, when Type is known
	SentAt *time.Time    // when its outbox row was enqueued (Reason "expired")
	detail string
}

// Reasons of a MissingTask.
const (
	MissingExpired     = "expired"
	MissingNotEnqueued = "not_enqueued"
	MissingUnknown     = "unknown"
)

func (m *MissingTask) Error() string { return m.detail }

// Is makes a MissingTask an ErrNotFound.
func (m *MissingTask) Is(target error) bool { return target == ErrNotFound }

// Missing explains why task id is not in any queue, from its outbox row
// when it has one (outbox may be nil: no database). It always returns a
// *MissingTask.
func (c *Client) Missing(ctx context.Context, outbox *store.Outbox, id string) error {
	if outbox != nil && store.IsUUID(id) {
		row, err := outbox.Get(ctx, id)
		if err == nil {
			return c.missingRow(row)
		}
		// Not an outbox row, or PostgreSQL cannot say: the generic answer.
	}
	return &MissingTask{ID: id, Reason: MissingUnknown, detail: fmt.Sprintf(
		"task %s is in no queue: either it was never enqueued under this ID, or it finished and its record "+
			"expired. A completed task stays for its type's retention (%s) or the retention it was enqueued with; "+
			"a failed one stays archived for 90 days; the catalog (GET /api/v1/task-types) lists each type's retention",
		id, c.retentions())}
}

// missingRow explains a task whose outbox row exists.
func (c *Client) missingRow(row store.OutboxEntry) *MissingTask {
	m := &MissingTask{ID: row.ID, Type: row.TaskType}
	_, headers, err := rowOptions(row.Options)
	if err == nil {
		m.Kept = c.reg.Retention(row.TaskType, headers, c.defaultRetention)
	}
	switch {
	case row.SentAt != nil:
		at := row.SentAt.UTC()
		m.Reason, m.SentAt = MissingExpired, &at
		m.detail = fmt.Sprintf("task %s (%s) was enqueued at %s and has finished: it completed and its record "+
			"expired after its type's retention (%s), or an operator deleted it. A failed task would still be "+
			"listed as archived", row.ID, row.TaskType, at.Format(time.RFC3339), keptText(m.Kept))
	case row.DeadAt != nil:
		m.Reason = MissingNotEnqueued
		m.detail = fmt.Sprintf("task %s (%s) was never enqueued: its outbox row was given up (%s); an operator "+
			"may requeue it (api outbox requeue)", row.ID, row.TaskType, row.LastError)
	default:
		m.Reason = MissingNotEnqueued
		m.detail = fmt.Sprintf("task %s (%s) is not enqueued yet: its outbox row waits for the relay (%d failed "+
			"attempts so far)", row.ID, row.TaskType, row.Attempts)
	}
	return m
}

// retentions lists every type's retention, e.g. "email:welcome 24h,
// system:ping nothing kept".
func (c *Client) retentions() string {
	var parts []string
	for _, t := range c.reg.Types() {
		parts = append(parts, t.Name+" "+keptText(c.reg.Retention(t.Name, nil, c.defaultRetention)))
	}
	return strings.Join(parts, ", ")
}

// keptText is a retention for people: "nothing kept", "24h", "1h30m".
func keptText(d time.Duration) string {
	if d <= 0 {
		return "nothing kept"
	}
	s := d.String()
	if d%time.Minute == 0 {
		s = strings.TrimSuffix(s, "0s")
	}
	if d%time.Hour == 0 {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
