package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/store"
)

// validKeyName: API key names appear in logs and scope idempotency keys;
// lower case keeps them apart from the bootstrap token's name, API_TOKEN.
var validKeyName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// runAdmin runs the operator commands that need only the database:
//
//	api createuser --email E --name N [--admin] [--password-env VAR]
//	api createkey --name NAME
//
// like Django's createsuperuser. createuser reads the password from the
// first line of stdin unless --password-env names a variable holding it.
// createkey prints the new key once; only its hash is stored.
func runAdmin(ctx context.Context, cmd string, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("api "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		email   = fs.String("email", "", "email (login name)")
		name    = fs.String("name", "", "display name (createuser) or key name (createkey)")
		admin   = fs.Bool("admin", false, "give the user the admin role")
		passEnv = fs.String("password-env", "", "read the password from this environment variable instead of stdin")
	)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %w\n%s", cmd, err, usage)
	}
	database, err := openAdminDB(ctx, getenv)
	if err != nil {
		return err
	}
	defer database.Close()

	switch cmd {
	case "createkey":
		if strings.TrimSpace(*name) == "" {
			return errors.New("createkey: --name is required")
		}
		if !validKeyName.MatchString(strings.TrimSpace(*name)) {
			return fmt.Errorf("createkey: --name %q: use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", *name)
		}
		key, hash := auth.NewAPIKey()
		k, err := store.NewAPIKeys(database).Create(ctx, strings.TrimSpace(*name), hash)
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("createkey: a key named %q already exists", *name)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "API key %q (id %d) created. It is shown only now:\n%s\n", k.Name, k.ID, key)
		return nil

	case "createuser":
		if strings.TrimSpace(*name) == "" {
			return errors.New("createuser: --name is required")
		}
		if err := validator.New().Var(strings.TrimSpace(*email), "required,email,max=254"); err != nil {
			return fmt.Errorf("createuser: --email %q is not an email address", *email)
		}
		password, err := readPassword("createuser", *passEnv, getenv, stdin)
		if err != nil {
			return err
		}
		hash, err := auth.HashPassword(password, 0)
		if err != nil {
			return err
		}
		// The operator vouches for the address: it counts as proven.
		verified := time.Now()
		u := store.User{Email: strings.TrimSpace(*email), Name: strings.TrimSpace(*name), PasswordHash: hash,
			Role: store.RoleUser, EmailVerifiedAt: &verified}
		if *admin {
			u.Role = store.RoleAdmin
		}
		if err := store.NewUsers(database).Create(ctx, &u); errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("createuser: %s already has an account", u.Email)
		} else if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %d <%s> created with role %s\n", u.ID, u.Email, u.Role)
		return nil
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// openAdminDB opens the database for the one-shot admin subcommands
// (createuser, createkey, outbox), which need only DATABASE_URL.
func openAdminDB(ctx context.Context, getenv func(string) string) (*sqlx.DB, error) {
	cfg, err := config.Load(getenv, config.RoleMigrate)
	if err != nil {
		return nil, err
	}
	database, err := db.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	return database, nil
}
