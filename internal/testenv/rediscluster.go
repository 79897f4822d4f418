package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a private Redis Cluster of three masters and no replicas,
// each a redis-server process on its own loopback port, for tests that
// check that everything works when keys are spread over hash slots (a
// script or multi-key command whose keys hash to different slots fails
// there with CROSSSLOT, where a single server would accept it).
//
// Every node requires Password, so tests also cover an authenticated
// cluster. The nodes keep no data on disk and are killed at cleanup.
type RedisCluster struct {
	Addrs    []string // 127.0.0.1:port of each master, the seed list for REDIS_CLUSTER_ADDRS
	Password string

	procs []*Proc
}

// clusterNodes is the number of masters: the smallest cluster
// `redis-cli --cluster create` accepts.
const clusterNodes = 3

// StartRedisCluster starts three redis-server processes in cluster mode,
// joins them with `redis-cli --cluster create` and waits until every node
// reports cluster_state:ok.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server not found in PATH (apt-get install redis-server): %v", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("testenv: redis-cli not found in PATH (apt-get install redis-tools): %v", err)
	}
	dir := t.TempDir()
	c := &RedisCluster{Password: "cluster-" + randomHex(8)}
	for _, port := range clusterPorts(t, clusterNodes) {
		p := strconv.Itoa(port)
		addr := "127.0.0.1:" + p
		c.Addrs = append(c.Addrs, addr)
		c.procs = append(c.procs, Start(t, "redis-server "+addr, server, nil,
			"--port", p, "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes-"+p+".conf"),
			"--cluster-node-timeout", "5000",
			"--requirepass", c.Password, "--masterauth", c.Password,
			"--save", "", "--appendonly", "no", "--dir", dir))
	}

	ctx := context.Background()
	nodes := make([]*redis.Client, len(c.Addrs))
	for i, addr := range c.Addrs {
		nodes[i] = redis.NewClient(&redis.Options{Addr: addr, Password: c.Password, MaxRetries: -1})
		defer nodes[i].Close()
	}
	for i, n := range nodes {
		Eventually(t, 20*time.Second, func() bool {
			if c.procs[i].Exited() {
				t.Fatalf("testenv: redis-server on %s exited at start:\n%s", c.Addrs[i], c.procs[i].Output())
			}
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			return n.Ping(pctx).Err() == nil
		}, "redis-server on %s does not answer PING", c.Addrs[i])
	}

	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	create := exec.CommandContext(cctx, cli, args...)
	// REDISCLI_AUTH rather than -a: no password on the command line, no warning.
	create.Env = append(os.Environ(), "REDISCLI_AUTH="+c.Password)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("testenv: redis-cli --cluster create %s: %v\n%s", strings.Join(c.Addrs, " "), err, out)
	}

	deadline := time.Now().Add(30 * time.Second)
	for i, n := range nodes {
		for {
			ictx, cancel := context.WithTimeout(ctx, time.Second)
			info, err := n.ClusterInfo(ictx).Result()
			cancel()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("testenv: cluster node %s is not ready after 30s: %v\n%s", c.Addrs[i], err, info)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return c
}

// Client returns a cluster client for the test's own use, closed at cleanup.
func (c *RedisCluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, Password: c.Password})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Env is the platform environment for this cluster: REDIS_CLUSTER_ADDRS and
// REDIS_CLUSTER_PASSWORD.
func (c *RedisCluster) Env() []string {
	return []string{"REDIS_CLUSTER_ADDRS=" + strings.Join(c.Addrs, ","), "REDIS_CLUSTER_PASSWORD=" + c.Password}
}

// clusterPorts returns n loopback ports P that are free now together with
// their cluster bus ports P+10000.
func clusterPorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for attempt := 0; len(ports) < n; attempt++ {
		if attempt > 1000 {
			t.Fatalf("testenv: found only %d of %d free port pairs P, P+10000", len(ports), n)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if port+10000 > 65535 {
			ln.Close()
			continue
		}
		bus, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000))
		if err != nil {
			ln.Close()
			continue
		}
		// Keep both until all pairs are chosen, so no two pairs collide.
		held = append(held, ln, bus)
		ports = append(ports, port)
	}
	return ports
}
