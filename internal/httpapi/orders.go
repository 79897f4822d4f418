package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/batch"
	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/service"
	"github.com/conveyor-run/conveyor/internal/store"
)

// orderResponse is an order; on creation it also names the tasks the order
// triggered (their IDs are the outbox rows', so GET /api/v1/tasks/{id}
// finds them once the relay has enqueued them).
type orderResponse struct {
	store.Order
	TaskIDs []string `json:"task_ids,omitempty"`
}

// orderIDBlock is how many order IDs an api process reserves at a time
// (service.OrderIDs): one round trip per block instead of one per order.
const orderIDBlock = 100

// handleOrderCreate creates a pending order for the caller through
// service.CreateOrders (POST /api/v1/orders). Without an Idempotency-Key the
// orders of concurrent requests are gathered (internal/batch) into one
// statement, prepared once per connection (prepared, nil: d), run outside
// any transaction: at hundreds of orders a second, one insert and one
// commit per request cost PostgreSQL more than the rows. Each request
// answers once its order's statement has committed; a statement that fails
// is run again order by order, so one bad order (a deleted user's) fails
// alone. With a key, the key is part of the order's own transaction: a
// retry either finds the committed order's response or, if the first
// attempt rolled back, creates the order itself.
func handleOrderCreate(d *sqlx.DB, prepared *store.Prepared, disp *queue.Dispatcher, ids *service.OrderIDs, idemTTL time.Duration) echo.HandlerFunc {
	type item struct {
		SKU            string `json:"sku" validate:"required,max=64"`
		Quantity       *int64 `json:"quantity" validate:"required,min=1,max=1000000"`
		UnitPriceCents *int64 `json:"unit_price_cents" validate:"required,min=0,max=1000000000"`
	}
	type request struct {
		Items    []item `json:"items" validate:"required,min=1,max=100,dive"`
		Currency string `json:"currency" validate:"required,iso4217"`
	}
	var q store.Querier = d
	if prepared != nil {
		q = prepared
	}
	gathered := batch.New(orderBatchMax, orderBatchTimeout, func(ctx context.Context, in []service.NewOrder) ([]service.CreatedOrder, error) {
		return service.CreateOrders(ctx, q, in)
	}, batch.Linger(orderLinger, orderLingerBelow), batch.Busy(orderBusy))
	return func(c echo.Context) error {
		idem, err := readIdempotency(c, idemTTL)
		if err != nil {
			return err
		}
		var req request
		if err := bind(c, &req); err != nil {
			return err
		}
		for i := range req.Items {
			req.Items[i].SKU = strings.TrimSpace(req.Items[i].SKU)
		}
		if err := c.Validate(req); err != nil {
			return err
		}
		items := make([]store.OrderItem, len(req.Items))
		for i, it := range req.Items {
			items[i] = store.OrderItem{SKU: it.SKU, Quantity: *it.Quantity, UnitPriceCents: *it.UnitPriceCents}
		}

		in := service.NewOrder{UserID: currentPrincipal(c).UserID, Currency: req.Currency, Items: items,
			RequestID: RequestID(c), IDs: ids}
		if idem == nil {
			created, err := gathered.Do(in)
			if err != nil {
				return orderCreateErr(c, err)
			}
			disp.Dispatch(created.Outbox...)
			return c.JSON(http.StatusCreated, orderResponse{Order: created.Order, TaskIDs: created.TaskIDs})
		}
		_, err = createInTx(c, d, disp, idem, http.StatusCreated, func(tx *sqlx.Tx) (any, []string, error) {
			created, err := service.CreateOrder(c.Request().Context(), tx, in)
			if err != nil {
				return nil, nil, err
			}
			return orderResponse{Order: created.Order, TaskIDs: created.TaskIDs}, created.Outbox, nil
		})
		return orderCreateErr(c, err)
	}
}

// The gathered order inserts: at most orderBatchMax orders per statement,
// each statement within orderBatchTimeout. A statement that finds the
// previous one ended less than orderBusy ago waits up to orderLinger for
// more orders (unless orderLingerBelow wait already): at a steady few
// hundred orders a second, requests come one by one. An idle api's first
// order goes at once.
const (
	orderBatchMax     = 100
	orderBatchTimeout = 10 * time.Second
	orderLinger       = 2 * time.Millisecond
	orderLingerBelow  = 64
	orderBusy         = 5 * time.Millisecond
)

// orderCreateErr answers a failed order insert: the only row an order
// refers to is its user's, which the route did not read (authenticate's
// byWrite), so a missing reference is a deleted user's token.
func orderCreateErr(c echo.Context, err error) error {
	if errors.Is(err, store.ErrMissingReference) {
		return userGone(c)
	}
	return err
}

// createInTx runs create in a transaction that also holds the request's
// Idempotency-Key, if any, and answers with status and the response create
// returned. Once the transaction has committed, the outbox rows create
// added go to disp, which sends them at once. A retry with the key either
// finds the committed response (replayed: it was written) or, if the first
// attempt rolled back, creates it itself.
func createInTx(c echo.Context, d *sqlx.DB, disp *queue.Dispatcher, idem *idempotency, status int,
	create func(tx *sqlx.Tx) (resp any, outbox []string, err error)) (replayed bool, err error) {
	ctx := c.Request().Context()
	var resp any
	var outbox []string
	err = db.InTx(ctx, d, func(tx *sqlx.Tx) error {
		if idem != nil {
			proceed, err := idem.reserve(c, tx)
			if !proceed {
				replayed = err == nil
				return errStop{err}
			}
		}
		var err error
		if resp, outbox, err = create(tx); err != nil {
			return err
		}
		if idem != nil {
			return idem.complete(ctx, tx, status, resp)
		}
		return nil
	})
	var stop errStop
	if errors.As(err, &stop) {
		return replayed, stop.err // when replayed, the first response was written
	}
	if err != nil {
		return false, err
	}
	disp.Dispatch(outbox...)
	return false, c.JSON(status, resp)
}

// errStop ends a transaction early (rolling it back) carrying the handler's
// own result.
type errStop struct{ err error }

func (e errStop) Error() string {
	if e.err == nil {
		return "stopped"
	}
	return e.err.Error()
}

// handleOrderList lists the caller's orders, or every order for an admin
// (GET /api/v1/orders).
func handleOrderList(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		page, err := parsePage(c)
		if err != nil {
			return err
		}
		p := currentPrincipal(c)
		var owner int64
		if !p.admin() {
			owner = p.User.ID
		}
		orders, total, err := store.NewOrders(d).List(c.Request().Context(), owner, page)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, listResponse[store.Order]{Data: orders, Total: total})
	}
}

// handleOrderGet shows one order to its owner or an admin; anyone else gets
// 404, not 403, so order IDs reveal nothing (GET /api/v1/orders/{id}).
func handleOrderGet(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := pathID(c, "id", "order")
		if err != nil {
			return err
		}
		o, err := store.NewOrders(d).Get(c.Request().Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("order")
		}
		if err != nil {
			return err
		}
		p := currentPrincipal(c)
		if !p.admin() && o.UserID != p.User.ID {
			return errNotFound("order")
		}
		return c.JSON(http.StatusOK, orderResponse{Order: o})
	}
}
