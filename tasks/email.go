package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/conveyor-run/conveyor/internal/mail"
	"github.com/conveyor-run/conveyor/internal/store"
)

// emailOpts are the defaults of the email tasks: Celery's classic
// countdown = 60 * 2**retries with 3 retries, capped at an hour.
func emailOpts() Opts {
	return Opts{Queue: "critical", MaxRetry: 3, Timeout: time.Minute, Retention: 24 * time.Hour,
		RetryBase: time.Minute, RetryCap: time.Hour}
}

// sendOnce renders template tmpl and sends it to `to` at most once per
// dedup key, however often the task runs:
//
//   - the key is claimed in email_log before sending;
//   - a key already "sent" (or permanently "failed") is a no-op;
//   - a key left "sending" by an attempt that died mid-send is not resent,
//     since the message may have left; the task is archived with a message
//     naming the email_log row so an operator can decide;
//   - a failure that certainly sent nothing releases the claim and retries;
//   - a message sent in full without an answer from the server keeps the
//     claim and archives the task, as it may have been delivered;
//   - a permanent SMTP rejection is recorded and archives the task with the
//     server's reply as its last error.
//
// Mail to an address its owner has not proven (verified false) is limited
// per recipient (d.UnverifiedMail): past the limit the email is dropped and
// the task succeeds. Such mail must carry no user-chosen text (the callers
// pick templates accordingly), so an account made with someone else's
// address cannot make Conveyor send that person the attacker's words. A
// proven address is never limited: a customer's own confirmations all go.
func sendOnce(ctx context.Context, d Deps, key, tmpl, to string, verified bool, data any) error {
	msg, err := d.Templates.Render(tmpl, to, data)
	if err != nil {
		return Permanent(err)
	}
	emails := d.emails()
	entry := store.EmailEntry{DedupKey: key, Recipient: to, Template: tmpl, Subject: msg.Subject}
	var claimed bool
	var existing store.EmailEntry
	if verified {
		claimed, existing, err = emails.Claim(ctx, entry)
	} else {
		lim := d.UnverifiedMail.orDefault()
		var limited bool
		claimed, limited, existing, err = store.NewEmailLog(d.DB).ClaimLimited(ctx, entry, lim.Max, lim.Window)
		if err == nil && limited {
			d.Log.WarnContext(ctx, "email to an unverified address dropped: limit reached",
				"dedup_key", key, "template", tmpl, "limit", lim.Max, "window", lim.Window)
			return nil
		}
	}
	if err != nil {
		return err
	}
	if !claimed {
		switch existing.Status {
		case store.EmailSending:
			return Permanent(fmt.Errorf("email %s (email_log id %d) was being sent by an attempt that stopped; not resending to keep at-most-once delivery", key, existing.ID))
		default:
			d.Log.InfoContext(ctx, "email already handled, skipping", "dedup_key", key, "status", existing.Status)
			return nil
		}
	}
	if err := d.Mailer.Send(ctx, msg); err != nil {
		if mail.IsPermanent(err) {
			if mErr := emails.MarkFailed(context.WithoutCancel(ctx), key, err.Error()); mErr != nil {
				return mErr
			}
			return Permanent(err)
		}
		if mail.IsUncertain(err) {
			// It may have been delivered: keep the claim ("sending") and
			// stop, as when an attempt dies mid-send.
			return Permanent(fmt.Errorf("email %s: %w; not resending to keep at-most-once delivery", key, err))
		}
		if rErr := emails.Release(context.WithoutCancel(ctx), key); rErr != nil {
			return fmt.Errorf("%w; releasing claim: %v", err, rErr)
		}
		return err
	}
	// The message has left: record it even if the task's context is done.
	return emails.MarkSent(context.WithoutCancel(ctx), key)
}

// Limit is a number of events per window.
type Limit struct {
	Max    int
	Window time.Duration
}

func (l Limit) orDefault() Limit {
	if l.Max <= 0 || l.Window <= 0 {
		return Limit{Max: 3, Window: 24 * time.Hour}
	}
	return l
}
