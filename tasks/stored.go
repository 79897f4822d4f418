package tasks

import "github.com/hibiken/asynq"

// TaskFromStored builds a task of type t from payload bytes that were
// validated when they were stored (an outbox row), forwarding them as they
// are rather than decoding and encoding them again; t's default options
// come first, then extra (later options win).
func (t Type) TaskFromStored(payload []byte, headers map[string]string, extra ...asynq.Option) *asynq.Task {
	o := t.Opts
	opts := append([]asynq.Option{
		asynq.Queue(o.Queue), asynq.MaxRetry(o.MaxRetry), asynq.Timeout(o.Timeout), asynq.Retention(o.retention(DefaultRetention)),
	}, extra...)
	return asynq.NewTaskWithHeaders(t.Name, payload, headers, opts...)
}
