package testdb

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

// Cluster is a private Postgres server for tests that must stop and start
// the database itself (the shared server must not be restarted under other
// tests' feet).
type Cluster struct {
	t       testing.TB
	bindir  string
	dataDir string
	port    int
	asUser  string
}

func pgBindir() (string, error) {
	if d := os.Getenv("TASKER_PG_BINDIR"); d != "" {
		return d, nil
	}
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", fmt.Errorf("PostgreSQL server binaries not found (set TASKER_PG_BINDIR)")
}

// StartCluster initialises and starts a private cluster on a free loopback
// port; it is stopped and removed when the test ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bindir, err := pgBindir()
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("", "tasker-cluster-*")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, bindir: bindir, dataDir: filepath.Join(base, "data")}
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		// Postgres refuses to run as root.
		c.asUser = "postgres"
		if out, err := exec.Command("chown", "-R", "postgres", base).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
		if err := os.Chmod(base, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	c.run("initdb", "-D", c.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
	c.Start()
	t.Cleanup(func() {
		_ = c.cmd("pg_ctl", "-D", c.dataDir, "-m", "immediate", "stop").Run()
		_ = os.RemoveAll(base)
	})
	c.run("createdb", "-h", "127.0.0.1", "-p", fmt.Sprint(c.port), "-U", "postgres", "tasker")
	return c
}

func (c *Cluster) cmd(name string, args ...string) *exec.Cmd {
	bin := filepath.Join(c.bindir, name)
	if c.asUser != "" {
		return exec.Command("runuser", append([]string{"-u", c.asUser, "--", bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

func (c *Cluster) run(name string, args ...string) {
	c.t.Helper()
	if out, err := c.cmd(name, args...).CombinedOutput(); err != nil {
		c.t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

// URL is the cluster's database URL.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/tasker?sslmode=disable", c.port)
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.dataDir, "-w", "-t", "60", "-l", filepath.Join(filepath.Dir(c.dataDir), "log"),
		"-o", fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c fsync=off", c.port, filepath.Dir(c.dataDir)), "start")
}

// Stop stops the server (fast shutdown: connections are closed).
func (c *Cluster) Stop() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.dataDir, "-w", "-m", "fast", "stop")
}
