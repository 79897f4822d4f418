package httpapi

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// openAPIDoc is the hand-kept OpenAPI 3.1 document of the API. A test fails
// when a route in routes.go is missing from it (TestOpenAPIListsEveryRoute).
//
//go:embed openapi.json
var openAPIDoc []byte

// handleOpenAPI serves the document (GET /api/v1/openapi.json).
func handleOpenAPI() echo.HandlerFunc {
	return func(c echo.Context) error {
		return c.JSONBlob(http.StatusOK, openAPIDoc)
	}
}
