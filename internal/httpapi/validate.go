package httpapi

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-playground/validator/v10"
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/store"
)

// newValidator checks request structs by their `validate` tags and names
// fields by their JSON names, so errors speak the caller's language.
func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return ""
		}
		return name
	})
	// maxbytes bounds a string's length in bytes, where max counts
	// characters: bcrypt takes at most 72 bytes of a password.
	err := v.RegisterValidation("maxbytes", func(fl validator.FieldLevel) bool {
		n, err := strconv.Atoi(fl.Param())
		return err == nil && len(fl.Field().String()) <= n
	})
	if err != nil {
		panic(err) // only for an invalid tag name
	}
	return v
}

// structValidator is Echo's Validator (set in NewServer, used through
// c.Validate): it reports every invalid field as a 422 naming the field by
// its JSON path (items[0].quantity).
type structValidator struct{ v *validator.Validate }

func (s structValidator) Validate(req any) error {
	err := s.v.Struct(req)
	var verrs validator.ValidationErrors
	if !errors.As(err, &verrs) {
		return err
	}
	fields := map[string]string{}
	for _, fe := range verrs {
		path := fe.Namespace()
		if _, rest, ok := strings.Cut(path, "."); ok {
			path = rest // drop the struct's own name
		}
		fields[path] = describe(fe)
	}
	return errValidation(fields)
}

func describe(fe validator.FieldError) string {
	isString := fe.Kind() == reflect.String
	switch fe.Tag() {
	case "required":
		return "is required"
	case "email":
		return "must be a valid email address"
	case "iso4217":
		return "must be an ISO 4217 currency code in capitals, such as EUR or USD"
	case "min", "gte":
		if isString {
			return fmt.Sprintf("must be at least %s characters", fe.Param())
		}
		if fe.Kind() == reflect.Slice {
			return fmt.Sprintf("must have at least %s entries", fe.Param())
		}
		return "must be at least " + fe.Param()
	case "max", "lte":
		if isString {
			return fmt.Sprintf("must be at most %s characters", fe.Param())
		}
		if fe.Kind() == reflect.Slice {
			return fmt.Sprintf("must have at most %s entries", fe.Param())
		}
		return "must be at most " + fe.Param()
	case "maxbytes":
		return fmt.Sprintf("must be at most %s bytes", fe.Param())
	case "notblank":
		return "must not be blank"
	}
	return "is invalid (" + fe.Tag() + ")"
}

// Pagination bounds (skip/limit query parameters).
const (
	defaultLimit = 20
	maxLimit     = 100
)

// parsePage reads ?skip= and ?limit=; out-of-range or non-integer values
// are a 422 naming the parameter.
func parsePage(c echo.Context) (store.Page, error) {
	p := store.Page{Limit: defaultLimit}
	fields := map[string]string{}
	if v := c.QueryParam("skip"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			fields["skip"] = "must be an integer ≥ 0"
		}
		p.Skip = n
	}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > maxLimit {
			fields["limit"] = fmt.Sprintf("must be an integer between 1 and %d", maxLimit)
		}
		p.Limit = n
	}
	if len(fields) > 0 {
		return p, errValidation(fields)
	}
	return p, nil
}

// pathID reads a positive integer path parameter; anything else is a 404
// (no such resource can exist).
func pathID(c echo.Context, name, what string) (int64, error) {
	id, err := strconv.ParseInt(c.Param(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, errNotFound(what)
	}
	return id, nil
}

// listResponse is every paginated list's shape.
type listResponse[T any] struct {
	Data  []T   `json:"data"`
	Total int64 `json:"total"`
}
