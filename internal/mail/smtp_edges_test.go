package mail_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/conveyor-run/conveyor/internal/mail"
)

// scriptedSMTP is a minimal SMTP server on loopback whose answer to the end
// of the message (the final ".") is afterData: a reply line, or "" to hang
// up without one. After a reply, every later command is answered by
// hanging up when dropAfter is set. It counts the messages it received in
// full and the connections it accepted.
type scriptedSMTP struct {
	addr      string
	received  atomic.Int32
	conns     atomic.Int32
	noopRset  atomic.Int32 // NOOP and RSET commands: round trips a sender need not make
	afterData string
	dropAfter bool
}

func startScriptedSMTP(t *testing.T, afterData string, dropAfter bool) *scriptedSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedSMTP{addr: ln.Addr().String(), afterData: afterData, dropAfter: dropAfter}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(conn)
		}
	}()
	return s
}

func (s *scriptedSMTP) serve(conn net.Conn) {
	defer conn.Close()
	s.conns.Add(1)
	r := bufio.NewReader(conn)
	say := func(line string) { _, _ = conn.Write([]byte(line + "\r\n")) }
	say("220 scripted.localhost ESMTP")
	replied := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		if replied && s.dropAfter {
			return // the message was accepted; now the connection dies
		}
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			say("250-scripted.localhost")
			say("250 8BITMIME")
		case strings.HasPrefix(cmd, "DATA"):
			say("354 end with <CRLF>.<CRLF>")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			s.received.Add(1)
			if s.afterData == "" {
				return // silence: hang up without answering
			}
			say(s.afterData)
			replied = true
		case strings.HasPrefix(cmd, "QUIT"):
			say("221 bye")
			return
		case strings.HasPrefix(cmd, "NOOP"), strings.HasPrefix(cmd, "RSET"):
			s.noopRset.Add(1)
			say("250 OK")
		default: // MAIL, RCPT
			say("250 OK")
		}
	}
}

// The SMTP conversation can fail at points that mean different things for an
// at-most-once sender: before the end of the message nothing was delivered
// (retry); a refusal of the message is final (5xx) or temporary (4xx); no
// answer at all after the whole message leaves delivery uncertain (do not
// retry); a failure after the server accepted it is no failure.
func TestSMTPSendClassifiesWhereTheConversationFails(t *testing.T) {
	t.Parallel()
	msg := mail.Message{To: "ada@example.com", Subject: "Hi", Text: "Hello"}
	cases := []struct {
		name                 string
		afterData            string
		dropAfter            bool
		wantNil              bool
		permanent, uncertain bool
	}{
		{"accepted", "250 queued as 1", false, true, false, false},
		{"accepted, then the connection drops before RSET/QUIT", "250 queued as 2", true, true, false, false},
		{"refused for now", "451 4.3.0 try again later", false, false, false, false},
		{"refused for good", "554 5.7.1 rejected", false, false, true, false},
		{"no answer after the message", "", false, false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startScriptedSMTP(t, tc.afterData, tc.dropAfter)
			err := newSMTP(t, "smtp://"+srv.addr).Send(context.Background(), msg)
			if got := srv.received.Load(); got != 1 {
				t.Fatalf("server received %d messages, want 1", got)
			}
			if tc.wantNil {
				if err != nil {
					t.Fatalf("Send = %v, want success: the server accepted the message", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if mail.IsPermanent(err) != tc.permanent || mail.IsUncertain(err) != tc.uncertain {
				t.Fatalf("Send = %v: permanent %v (want %v), uncertain %v (want %v)",
					err, mail.IsPermanent(err), tc.permanent, mail.IsUncertain(err), tc.uncertain)
			}
		})
	}
}

// Messages share a connection; one the server closed while it was kept is
// replaced for the next message, which still goes out (its NOOP check
// failed, so nothing of it had been sent).
func TestSMTPKeepsConnectionsBetweenMessages(t *testing.T) {
	t.Parallel()
	msg := mail.Message{To: "ada@example.com", Subject: "Hi", Text: "Hello"}
	for _, tc := range []struct {
		name      string
		dropAfter bool // the server hangs up after each accepted message
		wantConns int32
	}{
		{"kept", false, 1},
		{"closed by the server after each message", true, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startScriptedSMTP(t, "250 queued", tc.dropAfter)
			s := newSMTP(t, "smtp://"+srv.addr)
			t.Cleanup(func() { _ = s.Close() })
			for i := range 3 {
				if err := s.Send(context.Background(), msg); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			if got := srv.received.Load(); got != 3 {
				t.Fatalf("server received %d messages, want 3", got)
			}
			if got := srv.conns.Load(); got != tc.wantConns {
				t.Fatalf("%d connections, want %d", got, tc.wantConns)
			}
			if got := srv.noopRset.Load(); got != 0 {
				t.Fatalf("%d NOOP or RSET commands, want none: a message is MAIL, RCPT and DATA", got)
			}
		})
	}
}
