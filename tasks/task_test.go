package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

func TestRegistryDecodeStrict(t *testing.T) {
	t.Parallel()
	reg := tasks.All()
	cases := []struct {
		name, typ, payload string
		wantField          string // "" means valid
	}{
		{"ping empty", tasks.TypeSystemPing, ``, ""},
		{"ping null", tasks.TypeSystemPing, `null`, ""},
		{"ping object", tasks.TypeSystemPing, `{"sleep_ms":10}`, ""},
		{"ping sleep too long", tasks.TypeSystemPing, `{"sleep_ms":999999999}`, "sleep_ms"},
		{"welcome ok", tasks.TypeEmailWelcome, `{"user_id":7}`, ""},
		{"welcome missing id", tasks.TypeEmailWelcome, `{}`, "user_id"},
		{"welcome string id", tasks.TypeEmailWelcome, `{"user_id":"7"}`, "user_id"},
		{"welcome unknown field", tasks.TypeEmailWelcome, `{"user_id":7,"admin":true}`, "admin"},
		{"welcome array", tasks.TypeEmailWelcome, `[1]`, "payload"},
		{"welcome two objects", tasks.TypeEmailWelcome, `{"user_id":1}{"user_id":2}`, "payload"},
		{"order negative", tasks.TypeOrderProcess, `{"order_id":-1}`, "order_id"},
		{"confirmation ok", tasks.TypeEmailOrderConfirmation, `{"order_id":3}`, ""},
		{"cleanup negative", tasks.TypeMaintenanceCleanup, `{"max_age_hours":-1}`, "max_age_hours"},
		{"cleanup below the floor", tasks.TypeMaintenanceCleanup, `{"max_age_hours":23}`, "max_age_hours"},
		{"cleanup overflowing age", tasks.TypeMaintenanceCleanup, `{"max_age_hours":2562048}`, "max_age_hours"},
		{"cleanup beyond int64", tasks.TypeMaintenanceCleanup, `{"max_age_hours":99999999999999999999}`, "max_age_hours"},
		{"syntax", tasks.TypeOrderProcess, `{"order_id":`, "payload"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := reg.Decode(tc.typ, []byte(tc.payload))
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var fe tasks.FieldErrors
			if !errors.As(err, &fe) || fe[tc.wantField] == "" {
				t.Fatalf("err = %v, want a FieldErrors naming %q", err, tc.wantField)
			}
		})
	}
	if _, err := reg.Decode("nope:nothing", nil); !errors.Is(err, tasks.ErrUnknownType) {
		t.Fatalf("unknown type: err = %v", err)
	}
}

func TestNewAppliesTypeDefaults(t *testing.T) {
	t.Parallel()
	task, err := tasks.New(tasks.EmailWelcomePayload{UserID: 5}, asynq.MaxRetry(9))
	if err != nil {
		t.Fatal(err)
	}
	if task.Type() != tasks.TypeEmailWelcome || string(task.Payload()) != `{"user_id":5}` {
		t.Fatalf("task = %s %s", task.Type(), task.Payload())
	}
	if _, err := tasks.New(tasks.EmailWelcomePayload{}); err == nil {
		t.Fatal("New must validate the payload")
	}
	typ, _ := tasks.All().Lookup(tasks.TypeEmailWelcome)
	if typ.Opts.Queue != "critical" || typ.Opts.MaxRetry != 3 || typ.Opts.RetryBase != time.Minute {
		t.Fatalf("email opts = %+v (Celery's 60·2^n with 3 retries expected)", typ.Opts)
	}
}

func TestBackoffCeiling(t *testing.T) {
	t.Parallel()
	cases := []struct {
		n         int
		base, cap time.Duration
		want      time.Duration
	}{
		{0, time.Minute, time.Hour, time.Minute},
		{1, time.Minute, time.Hour, 2 * time.Minute},
		{2, time.Minute, time.Hour, 4 * time.Minute},
		{6, time.Minute, time.Hour, time.Hour}, // 64m capped
		{500, time.Second, time.Hour, time.Hour},
		{3, time.Second, 5 * time.Second, 5 * time.Second},
	}
	for _, tc := range cases {
		if got := tasks.BackoffCeiling(tc.n, tc.base, tc.cap); got != tc.want {
			t.Errorf("BackoffCeiling(%d, %s, %s) = %s, want %s", tc.n, tc.base, tc.cap, got, tc.want)
		}
	}
}

func TestRetryDelayFullJitterPerType(t *testing.T) {
	t.Parallel()
	reg := tasks.All()
	welcome := asynq.NewTask(tasks.TypeEmailWelcome, nil)
	top := func() float64 { return 0.999999 }
	bottom := func() float64 { return 0 }

	// Full jitter: the delay spans [0, ceiling).
	if d := reg.RetryDelay(0, 0, bottom)(2, nil, welcome); d != 0 {
		t.Errorf("lowest jitter = %s, want 0", d)
	}
	if d := reg.RetryDelay(0, 0, top)(2, nil, welcome); d < 239*time.Second || d >= 240*time.Second {
		t.Errorf("highest jitter at n=2 = %s, want just under 4m (60s·2²)", d)
	}
	// RETRY_BASE/RETRY_MAX override every type.
	if d := reg.RetryDelay(time.Second, 3*time.Second, top)(5, nil, welcome); d >= 3*time.Second || d < 2*time.Second {
		t.Errorf("overridden delay = %s, want just under the 3s cap", d)
	}
	// Order processing has its own curve (10s base).
	order := asynq.NewTask(tasks.TypeOrderProcess, nil)
	if d := reg.RetryDelay(0, 0, top)(0, nil, order); d >= 10*time.Second || d < 9*time.Second {
		t.Errorf("order:process first delay = %s, want just under 10s", d)
	}
}

func TestMuxArchivesBadPayloadAndMatchesExactly(t *testing.T) {
	t.Parallel()
	d, _ := testenv.DB(t)
	mux := tasks.NewMux(tasks.All(), tasks.Deps{DB: d, Log: testenv.Logger(t)}, nil)
	ctx := context.Background()

	// A payload that does not decode is archived (SkipRetry), with a clear error.
	err := mux.ProcessTask(ctx, asynq.NewTask(tasks.TypeOrderProcess, []byte(`{"order_id":"x"}`)))
	if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "order_id") {
		t.Fatalf("bad payload: err = %v", err)
	}
	// One that decodes but does not validate: archived as well.
	err = mux.ProcessTask(ctx, asynq.NewTask(tasks.TypeOrderProcess, []byte(`{"order_id":0}`)))
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("invalid payload: err = %v", err)
	}
	// Unknown fields are ignored by the worker (producers may be newer).
	err = mux.ProcessTask(ctx, asynq.NewTask(tasks.TypeSystemPing, []byte(`{"new_field":1}`)))
	if err != nil {
		t.Fatalf("unknown field: err = %v", err)
	}
	// No prefix matching: "system:ping:extra" is not system:ping.
	err = mux.ProcessTask(ctx, asynq.NewTask(tasks.TypeSystemPing+":extra", nil))
	if !errors.Is(err, tasks.ErrUnknownType) || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("prefix type: err = %v, want a retryable ErrUnknownType", err)
	}
	// A missing order is permanent.
	err = mux.ProcessTask(ctx, asynq.NewTask(tasks.TypeOrderProcess, []byte(`{"order_id":12345}`)))
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("missing order: err = %v", err)
	}
}

func TestFieldErrorsMessage(t *testing.T) {
	t.Parallel()
	err := tasks.FieldErrors{"b": "bad", "a": "worse"}
	if got := err.Error(); got != "invalid fields: a: worse; b: bad" {
		t.Fatalf("Error() = %q", got)
	}
	b, _ := json.Marshal(err)
	if !strings.Contains(string(b), `"a":"worse"`) {
		t.Fatalf("json = %s", b)
	}
}
