package mail

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
)

// SMTP delivers through an SMTP server given as smtp://user:pass@host:port
// (STARTTLS when the server offers it) or smtps://… (implicit TLS).
//
// Connections are kept between messages (up to maxIdleSMTP idle ones):
// dialling, the greeting, EHLO, STARTTLS and AUTH, then QUIT, for every
// message cost more than the message itself (a quarter of the worker's CPU
// in the orders benchmark). A message is MAIL, RCPT, DATA and its end: four
// round trips. go-mail would add a NOOP before each message and a NOOP and
// an RSET after it; none is needed (a server is ready for the next MAIL
// once it has answered the message, RFC 5321 §4.1.4), and each round trip
// costs both sides system calls. So a kept connection that the server has
// closed meanwhile shows at the message's MAIL command, with no reply: the
// message then goes on a new connection, since nothing of it was sent.
type SMTP struct {
	from   string
	client *gomail.Client // settings and dialling; safe for concurrent use
	idle   chan *smtp.Client
}

// maxIdleSMTP is how many connections an SMTP mailer keeps open while idle.
const maxIdleSMTP = 16

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
	opts := []gomail.Option{gomail.WithPort(port), gomail.WithTimeout(15 * time.Second),
		gomail.WithoutNoop(), gomail.WithoutRset()}
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
	c, err := gomail.NewClient(u.Hostname(), opts...)
	if err != nil {
		return nil, fmt.Errorf("SMTP_URL: %w", err)
	}
	return &SMTP{from: from, client: c, idle: make(chan *smtp.Client, maxIdleSMTP)}, nil
}

// Close ends the idle connections (QUIT).
func (s *SMTP) Close() error {
	for {
		select {
		case sc := <-s.idle:
			_ = s.client.CloseWithSMTPClient(sc)
		default:
			return nil
		}
	}
}

// conn returns an idle connection (kept true) or a new one.
func (s *SMTP) conn(ctx context.Context) (sc *smtp.Client, kept bool, err error) {
	select {
	case sc := <-s.idle:
		return sc, true, nil
	default:
	}
	sc, err = s.client.DialToSMTPClientWithContext(ctx)
	return sc, false, err
}

// release keeps sc for the next message if it is in a known state (its
// last message went through), and closes it otherwise or when enough
// connections are idle.
func (s *SMTP) release(sc *smtp.Client, reuse bool) {
	if reuse {
		select {
		case s.idle <- sc:
			return
		default:
		}
	}
	_ = s.client.CloseWithSMTPClient(sc)
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
	sc, kept, err := s.conn(ctx)
	if err != nil {
		return fmt.Errorf("smtp send to %s: %w", m.To, err)
	}
	err = s.client.SendWithSMTPClient(sc, msg)
	if kept && staleConn(err) {
		// The kept connection is gone (the server closed it while idle):
		// nothing was sent, so the message goes on a new one.
		s.release(sc, false)
		if sc, err = s.client.DialToSMTPClientWithContext(ctx); err != nil {
			return fmt.Errorf("smtp send to %s: %w", m.To, err)
		}
		err = s.client.SendWithSMTPClient(sc, msg)
	}
	s.release(sc, err == nil)
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

// staleConn reports a send that failed on the connection itself before
// the message: at go-mail's connection check, or at MAIL without an SMTP
// reply (the server had closed the kept connection). Nothing was sent.
func staleConn(err error) bool {
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return false
	}
	return se.Reason == gomail.ErrConnCheck || (se.Reason == gomail.ErrSMTPMailFrom && se.ErrorCode() == 0)
}
