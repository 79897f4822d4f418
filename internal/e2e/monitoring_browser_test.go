package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// chromium finds the browser deploy/local/browser.sh installs. The test
// fails, not skips, without it: `make test` installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, c := range []string{os.Getenv("CHROMIUM_BIN"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if c != "" {
			if _, err := os.Stat(c); err == nil {
				return c
			}
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("chromium not found: run deploy/local/browser.sh (make test does), or set CHROMIUM_BIN")
	return ""
}

// testOutput is where tests leave artifacts for people to look at: the
// repository's ignored .local/test-output/, or CONVEYOR_TEST_OUTPUT.
func testOutput(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CONVEYOR_TEST_OUTPUT")
	if dir == "" {
		dir = testenv.RepoPath(t, filepath.Join(".local", "test-output"))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func monitorUsers(t *testing.T, users ...[3]string) string {
	t.Helper()
	var entries []string
	for _, u := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(u[1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		e := u[0] + ":" + string(h)
		if u[2] != "" {
			e += ":" + u[2]
		}
		entries = append(entries, e)
	}
	return "MONITOR_USERS=" + strings.Join(entries, ",")
}

func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// TestDashboardInABrowser logs in to the real api's dashboard with headless
// Chromium, opens the queues page, finds the default queue holding the
// tasks just enqueued (no worker runs, so they stay pending) and saves a
// screenshot. Wrong passwords get 401 and a read-only user's delete is
// refused.
func TestDashboardInABrowser(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true, Env: []string{
		monitorUsers(t, [3]string{"ops", "ops-password", ""}, [3]string{"viewer", "viewer-password", "ro"}),
	}})
	var ids []string
	for range 3 {
		ids = append(ids, enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{}}`).ID)
	}

	// Without the right password: 401 with a Basic challenge.
	for _, auth := range []string{"", basicAuth("ops", "wrong"), basicAuth("nobody", "ops-password")} {
		req, _ := http.NewRequest(http.MethodGet, p.APIURL+"/monitoring/", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("auth %q: %d %q, want 401 with a Basic challenge", auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	// The read-only user cannot delete; the task is still there.
	del := p.APIURL + "/monitoring/api/queues/default/pending_tasks/" + ids[0]
	if status, body := testenv.DoJSON(t, http.MethodDelete, del, basicAuth("viewer", "viewer-password"), nil, nil); status != http.StatusForbidden {
		t.Errorf("viewer DELETE: %d %s, want 403", status, body)
	}
	if v := getTask(t, p, ids[0]); v.State != "pending" {
		t.Errorf("after the viewer's delete the task is %q, want pending", v.State)
	}

	// The browser.
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(browser),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	// Basic credentials on every request the page makes (its own API calls
	// too); the dashboard's web fonts come from the internet, which tests
	// do not reach, so they are blocked instead of left to time out.
	var queueRow map[string]string
	err := chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			if _, err := chromedp.Call(ctx, network.SetBlockedURLs, network.SetBlockedURLsParams{URLPatterns: []*network.BlockPattern{
				{URLPattern: "https://fonts.googleapis.com/*", Block: true},
				{URLPattern: "https://fonts.gstatic.com/*", Block: true},
			}}); err != nil {
				return err
			}
			_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
				Headers: network.Headers{"Authorization": basicAuth("ops", "ops-password")}})
			return err
		}),
		chromedp.Navigate(p.APIURL+"/monitoring/"),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			// The queues table, as header → cell text for the default queue's row.
			const js = `(() => {
				for (const table of document.querySelectorAll("table")) {
					const heads = [...table.querySelectorAll("thead th")].map(th => th.innerText.trim());
					for (const tr of table.querySelectorAll("tbody tr")) {
						const cells = [...tr.querySelectorAll("td, th")].map(td => td.innerText.trim());
						if (cells[0] === "default") {
							const row = {};
							heads.forEach((h, i) => { row[h] = cells[i] ?? ""; });
							return JSON.stringify(row);
						}
					}
				}
				return "";
			})()`
			raw, err := chromedp.Run(ctx, chromedp.Poll[string](js,
				chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(45*time.Second)))
			if err != nil {
				return fmt.Errorf("no queues table with a default row: %w", err)
			}
			return json.Unmarshal([]byte(raw), &queueRow)
		}),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(testOutput(t), "monitoring-queues.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshot: %s (default queue row: %v)", path, queueRow)

	if queueRow["Size"] != "3" {
		t.Errorf("default queue row %v: want Size 3 (the pending pings)", queueRow)
	}
}
