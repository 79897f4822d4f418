package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

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
	var password string
	if *passEnv != "" {
		password = getenv(*passEnv)
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("hashpassword: read password from stdin: %w", err)
		}
		password = strings.TrimRight(line, "\r\n")
	}
	if len(password) < auth.MinPasswordLen || len(password) > 72 {
		return fmt.Errorf("hashpassword: the password must be %d to 72 characters", auth.MinPasswordLen)
	}
	hash, err := auth.HashPassword(password, 0)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, hash)
	return nil
}
