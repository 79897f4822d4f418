package config_test

import (
	"slices"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/config"
)

func TestLoadAuthSettings(t *testing.T) {
	t.Parallel()
	env := base()
	delete(env, "API_TOKEN") // optional since API keys and admin JWTs exist
	env["CORS_ALLOWED_ORIGINS"] = "https://app.example.com, http://localhost:3000/"
	env["JWT_TTL"] = "30m"
	env["LOGIN_MAX_FAILURES"] = "3"
	c, err := config.Load(envOf(env), config.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.JWTSecret) != env["JWT_SECRET"] || c.JWTTTL != 30*time.Minute || c.LoginMaxFailures != 3 ||
		c.LoginWindow != 15*time.Minute || c.APIToken != "" {
		t.Fatalf("config = %+v", c)
	}
	if want := []string{"https://app.example.com", "http://localhost:3000"}; !slices.Equal(c.CORSAllowedOrigins, want) {
		t.Fatalf("origins = %v, want %v", c.CORSAllowedOrigins, want)
	}
}

func TestLoadDevModeNeedsNoJWTSecret(t *testing.T) {
	t.Parallel()
	env := base()
	delete(env, "JWT_SECRET")
	env["DEV_MODE"] = "true"
	c, err := config.Load(envOf(env), config.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	if c.JWTSecret != nil {
		t.Fatal("DEV_MODE without JWT_SECRET must leave the secret to the api (random per process)")
	}
}
