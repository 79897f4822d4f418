package main

import (
	"io"
	"net"

	"github.com/emersion/go-smtp"
)

// smtpSink is a tiny in-process SMTP server that accepts and discards every
// message, so the worker's confirmation emails really cross an SMTP
// connection during the orders scenario. When an email counts as sent is
// read from the email_log table the worker writes, not from here.
type smtpSink struct {
	srv  *smtp.Server
	addr string
}

func startSMTPSink() (*smtpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := smtp.NewServer(sinkBackend{})
	srv.Domain = "loadgen.localhost"
	srv.AllowInsecureAuth = true
	go func() { _ = srv.Serve(ln) }()
	return &smtpSink{srv: srv, addr: ln.Addr().String()}, nil
}

func (s *smtpSink) URL() string { return "smtp://" + s.addr }
func (s *smtpSink) Close()      { _ = s.srv.Close() }

type sinkBackend struct{}

func (sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return sinkSession{}, nil }

type sinkSession struct{}

func (sinkSession) Reset()                               {}
func (sinkSession) Logout() error                        { return nil }
func (sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (sinkSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
