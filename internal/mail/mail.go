// Package mail renders the emails Conveyor sends and delivers them.
//
// Templates are embedded in the binary (text and HTML bodies per message).
// Two Mailers exist: SMTP for real delivery (SMTP_URL) and Log, the dev mailer
// that writes each message to the log instead of sending it. Send reports
// whether a failure is permanent (the server rejected the message: retrying
// cannot help) so task handlers can archive instead of retrying.
package mail

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"log/slog"
	"strings"
	texttemplate "text/template"
	"unicode"
	"unicode/utf8"
)

//go:embed templates/*
var templateFS embed.FS

// Message is one rendered email.
type Message struct {
	To      string
	Subject string
	Text    string
	HTML    string
}

// Mailer delivers messages.
type Mailer interface {
	Send(ctx context.Context, m Message) error
}

// PermanentError wraps a failure that a retry cannot fix (for example a 5xx
// SMTP reply rejecting the recipient). Reply is the server's answer.
type PermanentError struct{ Reply string }

func (e *PermanentError) Error() string { return "permanent delivery failure: " + e.Reply }

// IsPermanent reports whether err is a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// UncertainError: the whole message reached the server, but its answer did
// not reach us (a timeout or a dropped connection after the final "."). The
// email may have been delivered, so an at-most-once sender must not retry.
type UncertainError struct{ Err error }

func (e *UncertainError) Error() string {
	return "delivery uncertain: the server did not answer after the message was sent: " + e.Err.Error()
}

func (e *UncertainError) Unwrap() error { return e.Err }

// IsUncertain reports whether err is an UncertainError.
func IsUncertain(err error) bool {
	var u *UncertainError
	return errors.As(err, &u)
}

// Template names.
const (
	TemplateWelcome           = "welcome"
	TemplateOrderConfirmation = "order_confirmation"
	// TemplateOrderNotice tells an address not yet proven that an order was
	// placed, with no user-chosen text (no name, no items).
	TemplateOrderNotice = "order_notice"
)

// Templates renders the embedded templates.
type Templates struct {
	text *texttemplate.Template
	html *htmltemplate.Template
}

// LoadTemplates parses the embedded templates; it fails only if a template in
// the binary is broken, which tests catch.
func LoadTemplates() (*Templates, error) {
	funcs := map[string]any{"cents": formatCents, "clean": Clean}
	t, err := texttemplate.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.txt")
	if err != nil {
		return nil, fmt.Errorf("parse text templates: %w", err)
	}
	h, err := htmltemplate.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parse html templates: %w", err)
	}
	return &Templates{text: t, html: h}, nil
}

// Render builds the message for template name. Each template defines
// "subject" and the body; data is the template's input.
func (t *Templates) Render(name, to string, data any) (Message, error) {
	var subj, text, html bytes.Buffer
	if err := t.text.ExecuteTemplate(&subj, name+".subject", data); err != nil {
		return Message{}, fmt.Errorf("render %s subject: %w", name, err)
	}
	if err := t.text.ExecuteTemplate(&text, name+".txt", data); err != nil {
		return Message{}, fmt.Errorf("render %s text: %w", name, err)
	}
	if err := t.html.ExecuteTemplate(&html, name+".html", data); err != nil {
		return Message{}, fmt.Errorf("render %s html: %w", name, err)
	}
	return Message{To: to, Subject: subj.String(), Text: text.String(), HTML: html.String()}, nil
}

// Log is the dev mailer: it logs each message and sends nothing.
type Log struct{ Logger *slog.Logger }

// Send logs m.
func (l Log) Send(ctx context.Context, m Message) error {
	l.Logger.InfoContext(ctx, "email (dev mailer, not sent)", "to", m.To, "subject", m.Subject, "body", m.Text)
	return nil
}

// formatCents renders 1234 as "12.34".
func formatCents(c int64) string {
	sign := ""
	if c < 0 {
		sign, c = "-", -c
	}
	return fmt.Sprintf("%s%d.%02d", sign, c/100, c%100)
}

// MaxUserText bounds, in characters, each piece of user-supplied text an
// email carries (names, SKUs): the API bounds them too, but rows written
// another way (a CLI, an old version) must not make an email unbounded.
const MaxUserText = 100

// Clean makes user-supplied text safe to put in an email: control and
// format characters (which could forge header lines or reorder text, as
// bidi overrides do) become spaces, and the text is cut to MaxUserText
// characters. The HTML template escapes the result as well.
func Clean(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == MaxUserText {
			b.WriteString("…")
			break
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			r = ' '
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
