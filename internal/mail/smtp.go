package mail

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// SMTP delivers through an SMTP server given as smtp://user:pass@host:port
// (STARTTLS when the server offers it) or smtps://… (implicit TLS).
type SMTP struct {
	from string
	opts []gomail.Option
	host string
}

// NewSMTP parses rawURL (validated by config) and returns a mailer sending as from.
func NewSMTP(rawURL, from string) (*SMTP, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("SMTP_URL: %w", err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return nil, fmt.Errorf("SMTP_URL: port %q: %w", u.Port(), err)
	}
	opts := []gomail.Option{gomail.WithPort(port), gomail.WithTimeout(15 * time.Second)}
	if u.Scheme == "smtps" {
		opts = append(opts, gomail.WithSSL())
	} else {
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(u.User.Username()), gomail.WithPassword(pass))
	}
	return &SMTP{from: from, opts: opts, host: u.Hostname()}, nil
}

// Send delivers m. A 5xx reply is returned as *PermanentError carrying the
// server's reply. A message sent in full whose acceptance never arrived is
// an *UncertainError. Anything else (4xx, connection refused, a connection
// lost before the end of the message) certainly delivered nothing and is a
// plain error that callers retry. Once the server has accepted the message,
// later failures (RSET, QUIT) do not matter: Send reports success.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	msg := gomail.NewMsg()
	if err := msg.From(s.from); err != nil {
		return &PermanentError{Reply: fmt.Sprintf("invalid sender %q: %v", s.from, err)}
	}
	if err := msg.To(m.To); err != nil {
		return &PermanentError{Reply: fmt.Sprintf("invalid recipient %q: %v", m.To, err)}
	}
	msg.Subject(m.Subject)
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	c, err := gomail.NewClient(s.host, s.opts...)
	if err != nil {
		return fmt.Errorf("smtp client: %w", err)
	}
	err = c.DialAndSendWithContext(ctx, msg)
	if err == nil || msg.IsDelivered() {
		return nil // accepted (250 after DATA); a failed RSET or QUIT after that changes nothing
	}
	var se *gomail.SendError
	if errors.As(err, &se) {
		switch {
		case se.ErrorCode() >= 500:
			return &PermanentError{Reply: err.Error()}
		case se.Reason == gomail.ErrSMTPDataClose && se.ErrorCode() == 0:
			// No SMTP reply to the final ".": not a refusal, a silence.
			return &UncertainError{Err: fmt.Errorf("smtp send to %s: %w", m.To, err)}
		}
	}
	return fmt.Errorf("smtp send to %s: %w", m.To, err)
}
