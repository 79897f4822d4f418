package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/conveyor-run/conveyor/internal/auth"
)

// runHashPassword prints the bcrypt hash of a password, for MONITOR_USERS
// (name:hash[:ro]). It needs no configuration and no database:
//
//	printf '%s\n' "$PASSWORD" | api hashpassword
//	api hashpassword --password-env DASHBOARD_PASSWORD
func runHashPassword(args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("api hashpassword", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	passEnv := fs.String("password-env", "", "read the password from this environment variable instead of stdin")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("hashpassword: %w\n%s", err, usage)
	}
	password, err := readPassword("hashpassword", *passEnv, getenv, stdin)
	if err != nil {
		return err
	}
	hash, err := auth.HashPassword(password, 0)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, hash)
	return nil
}

// readPassword reads a password for cmd from the variable passEnv names or,
// when passEnv is empty, from the first line of stdin, and checks bcrypt's
// limits: at least auth.MinPasswordLen characters, at most 72 bytes.
func readPassword(cmd, passEnv string, getenv func(string) string, stdin io.Reader) (string, error) {
	var password string
	if passEnv != "" {
		password = getenv(passEnv)
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s: read password from stdin: %w", cmd, err)
		}
		password = strings.TrimRight(line, "\r\n")
	}
	if utf8.RuneCountInString(password) < auth.MinPasswordLen || len(password) > 72 {
		return "", fmt.Errorf("%s: the password must have at least %d characters and at most 72 bytes", cmd, auth.MinPasswordLen)
	}
	return password, nil
}
