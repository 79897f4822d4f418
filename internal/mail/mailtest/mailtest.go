// Package mailtest runs a real SMTP server on loopback for tests (built on
// emersion/go-smtp), records what it receives and can refuse recipients
// with chosen SMTP replies. Tests point SMTP_URL (or mail.NewSMTP) at it and
// assert on the messages that actually crossed the wire.
package mailtest

import (
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one received email, decoded enough to assert on.
type Message struct {
	From    string
	To      []string // envelope recipients
	Subject string
	Text    string // the text/plain part
	HTML    string // the text/html part
	Raw     string
}

// RejectFunc decides the reply to RCPT TO: nil accepts, an *smtp.SMTPError
// refuses with its code (4xx temporary, 5xx permanent).
type RejectFunc func(rcpt string) *smtp.SMTPError

// Server is a running SMTP server.
type Server struct {
	Addr string

	srv    *smtp.Server
	mu     sync.Mutex
	msgs   []Message
	reject RejectFunc
	notify chan struct{}
}

// Start runs a server on a free 127.0.0.1 port until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{notify: make(chan struct{}, 1)}
	srv := smtp.NewServer(backend{s})
	srv.Domain = "mailtest.localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mailtest: %v", err)
	}
	s.Addr, s.srv = ln.Addr().String(), srv
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// URL is the server as SMTP_URL.
func (s *Server) URL() string { return "smtp://" + s.Addr }

// Reject installs f to answer every later RCPT TO (nil: accept all).
func (s *Server) Reject(f RejectFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reject = f
}

// Messages returns what was received so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// To returns the messages received for rcpt.
func (s *Server) To(rcpt string) []Message {
	var out []Message
	for _, m := range s.Messages() {
		for _, to := range m.To {
			if strings.EqualFold(to, rcpt) {
				out = append(out, m)
			}
		}
	}
	return out
}

// Wait blocks until cond holds for the received messages or timeout passes,
// and reports whether it held.
func (s *Server) Wait(timeout time.Duration, cond func([]Message) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if cond(s.Messages()) {
			return true
		}
		select {
		case <-s.notify:
		case <-deadline.C:
			return cond(s.Messages())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type backend struct{ s *Server }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{s: b.s}, nil }

type session struct {
	s    *Server
	from string
	to   []string
}

func (x *session) Reset()        { x.from, x.to = "", nil }
func (x *session) Logout() error { return nil }

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.from = from
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.s.mu.Lock()
	reject := x.s.reject
	x.s.mu.Unlock()
	if reject != nil {
		if e := reject(to); e != nil {
			return e
		}
	}
	x.to = append(x.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := parse(string(raw))
	m.From, m.To = x.from, append([]string(nil), x.to...)
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, m)
	x.s.mu.Unlock()
	select {
	case x.s.notify <- struct{}{}:
	default:
	}
	return nil
}

// parse extracts the subject and the text and HTML parts; what it cannot
// parse stays in Raw.
func parse(raw string) Message {
	m := Message{Raw: raw}
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		return m
	}
	dec := new(mime.WordDecoder)
	if subj, err := dec.DecodeHeader(msg.Header.Get("Subject")); err == nil {
		m.Subject = subj
	}
	walk(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body, &m)
	return m
}

func walk(contentType, encoding string, body io.Reader, m *Message) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = "text/plain"
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) || err != nil {
				return
			}
			walk(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p, m)
		}
	}
	b, _ := io.ReadAll(decodeBody(encoding, body))
	switch mt {
	case "text/plain":
		m.Text += string(b)
	case "text/html":
		m.HTML += string(b)
	}
}
