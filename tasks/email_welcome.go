package tasks

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/conveyor-run/conveyor/internal/mail"
	"github.com/conveyor-run/conveyor/internal/stack"
	"github.com/conveyor-run/conveyor/internal/store"
)

// TypeEmailWelcome sends the welcome email to a new user, once.
const TypeEmailWelcome = "email:welcome" // on the wire: never rename in place

// EmailWelcomePayload is the payload of email:welcome.
type EmailWelcomePayload struct {
	UserID int64 `json:"user_id"`
}

// TypeName implements Payload.
func (EmailWelcomePayload) TypeName() string { return TypeEmailWelcome }

// Opts implements Payload.
func (EmailWelcomePayload) Opts() Opts { return emailOpts() }

// Validate implements Payload.
func (p EmailWelcomePayload) Validate() error {
	if p.UserID <= 0 {
		return FieldErrors{"user_id": "must be a positive integer"}
	}
	return nil
}

func handleEmailWelcome(d Deps) Handler[EmailWelcomePayload] {
	return func(ctx context.Context, p EmailWelcomePayload) error {
		stack.GrowDeep() // JSON by reflection, templates, SMTP: deeper than the 16 KB every task gets
		u, err := store.NewUsers(d.DB).Get(ctx, p.UserID)
		if errors.Is(err, store.ErrNotFound) {
			return Permanent(err)
		}
		if err != nil {
			return fmt.Errorf("load user %d: %w", p.UserID, err)
		}
		// The welcome email goes to an address nobody has proven yet: it
		// carries no user-chosen text (not even the name), only the link
		// that proves the address.
		data := struct{ Email, VerifyURL string }{Email: u.Email}
		if d.VerifyLinkFunc != nil && u.EmailVerifiedAt == nil {
			data.VerifyURL = d.VerifyLinkFunc(u.ID, u.Email)
		}
		return sendOnce(ctx, d, "welcome:"+strconv.FormatInt(u.ID, 10), mail.TemplateWelcome, u.Email,
			u.EmailVerifiedAt != nil, data)
	}
}
