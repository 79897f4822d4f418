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

// TypeEmailOrderConfirmation sends an order's confirmation email, once.
const TypeEmailOrderConfirmation = "email:order_confirmation" // on the wire: never rename in place

// EmailOrderConfirmationPayload is the payload of email:order_confirmation.
type EmailOrderConfirmationPayload struct {
	OrderID int64 `json:"order_id"`
}

// TypeName implements Payload.
func (EmailOrderConfirmationPayload) TypeName() string { return TypeEmailOrderConfirmation }

// Opts implements Payload.
func (EmailOrderConfirmationPayload) Opts() Opts { return emailOpts() }

// Validate implements Payload.
func (p EmailOrderConfirmationPayload) Validate() error {
	if p.OrderID <= 0 {
		return FieldErrors{"order_id": "must be a positive integer"}
	}
	return nil
}

func handleEmailOrderConfirmation(d Deps) Handler[EmailOrderConfirmationPayload] {
	return func(ctx context.Context, p EmailOrderConfirmationPayload) error {
		stack.GrowDeep() // JSON by reflection, templates, SMTP: deeper than the 16 KB every task gets
		o, u, err := d.orders().GetWithCustomer(ctx, p.OrderID)
		if errors.Is(err, store.ErrNotFound) {
			return Permanent(err)
		}
		if err != nil {
			return fmt.Errorf("load order %d: %w", p.OrderID, err)
		}
		if o.Status == store.OrderFailed {
			// The order workflow never gets here for a failed order; a task
			// enqueued by hand must not confirm it either.
			return Permanent(fmt.Errorf("order %d failed: no confirmation", o.ID))
		}
		items, err := o.Items()
		if err != nil {
			return Permanent(err)
		}
		data := struct {
			Name  string
			Order store.Order
			Items []store.OrderItem
		}{u.Name, o, items}
		key := "order_confirmation:" + strconv.FormatInt(o.ID, 10)
		if u.EmailVerifiedAt == nil {
			// Not proven: a notice without the name or the items, limited
			// per recipient (sendOnce).
			return sendOnce(ctx, d, key, mail.TemplateOrderNotice, u.Email, false, data)
		}
		return sendOnce(ctx, d, key, mail.TemplateOrderConfirmation, u.Email, true, data)
	}
}
