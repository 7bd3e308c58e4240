// Package deploy_test keeps the deploy files (Dockerfile, docker-compose.yml,
// Prometheus configuration and alert rules, Grafana provisioning and
// dashboard) consistent with the code: configuration keys, the example
// worker's environment, ports, service names, paths in the repository, the
// pgmq version the Go client can read, and the metric names the orchestrator
// and the worker SDK really expose (checked by running a real engine, a real
// worker and a task in-process).
//
// No Docker engine is needed (or used): the files are parsed, not run.
// TestMetricsUsedAreDocumentedAndExposed needs DATABASE_URL, like the rest
// of the integration tests (`make test` provides one).
package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/worker"
)

// repoRoot is the repository root seen from this package's directory (go
// test runs in deploy/).
const repoRoot = ".."

// The compose service names the files below refer to.
const (
	svcPostgres     = "postgres"
	svcOrchestrator = "orchestrator"
	svcWorker       = "example-worker"
	svcJaeger       = "jaeger"
	svcPrometheus   = "prometheus"
	svcGrafana      = "grafana"
)

// ---------------------------------------------------------------- compose --

type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	// Other top-level keys: only x- extension fields are expected.
	Rest map[string]any `yaml:",inline"`
}

type composeService struct {
	Image       string       `yaml:"image"`
	Build       any          `yaml:"build"`
	Entrypoint  any          `yaml:"entrypoint"`
	Command     any          `yaml:"command"`
	Environment any          `yaml:"environment"`
	Ports       []any        `yaml:"ports"`
	Expose      []any        `yaml:"expose"`
	Volumes     []any        `yaml:"volumes"`
	DependsOn   any          `yaml:"depends_on"`
	Healthcheck *healthcheck `yaml:"healthcheck"`
	Restart     string       `yaml:"restart"`
	// Keys this test does not know: a typo, or a valid key to add above.
	Rest map[string]any `yaml:",inline"`
}

type healthcheck struct {
	Test     any    `yaml:"test"`
	Interval string `yaml:"interval"`
	Timeout  string `yaml:"timeout"`
	Retries  int    `yaml:"retries"`
	Disable  bool   `yaml:"disable"`
}

type publishedPort struct {
	hostIP    string
	published string
	target    string
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	readYAML(t, "docker-compose.yml", &c)
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml: no services")
	}
	return c
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func (c composeFile) service(t *testing.T, name string) composeService {
	t.Helper()
	s, ok := c.Services[name]
	if !ok {
		t.Fatalf("docker-compose.yml has no service %q", name)
	}
	return s
}

// env returns a service's environment, from the map or the list form.
func (s composeService) env(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	switch e := s.Environment.(type) {
	case nil:
	case map[string]any:
		for k, v := range e {
			if v == nil {
				out[k] = ""
			} else {
				out[k] = fmt.Sprint(v)
			}
		}
	case []any:
		for _, item := range e {
			k, v, _ := strings.Cut(fmt.Sprint(item), "=")
			out[k] = v
		}
	default:
		t.Fatalf("environment has an unexpected form %T", e)
	}
	return out
}

// stringList reads an entrypoint/command/healthcheck test: a list, or a
// string split on spaces.
func stringList(v any) []string {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return strings.Fields(x)
	case []any:
		out := make([]string, 0, len(x))
		for _, item := range x {
			out = append(out, fmt.Sprint(item))
		}
		return out
	}
	return []string{fmt.Sprint(v)}
}

// dependsOn returns the service's dependencies and their conditions.
func (s composeService) dependsOn(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	switch d := s.DependsOn.(type) {
	case nil:
	case []any:
		for _, name := range d {
			out[fmt.Sprint(name)] = "service_started"
		}
	case map[string]any:
		for name, spec := range d {
			cond := "service_started"
			if m, ok := spec.(map[string]any); ok {
				if c, ok := m["condition"].(string); ok {
					cond = c
				}
			}
			out[name] = cond
		}
	default:
		t.Fatalf("depends_on has an unexpected form %T", d)
	}
	return out
}

// ports parses the short ("[ip:][published:]target[/proto]") and long forms.
func (s composeService) ports(t *testing.T) []publishedPort {
	t.Helper()
	var out []publishedPort
	for _, p := range s.Ports {
		switch x := p.(type) {
		case map[string]any:
			out = append(out, publishedPort{hostIP: str(x["host_ip"]), published: str(x["published"]), target: str(x["target"])})
		default:
			spec, _, _ := strings.Cut(fmt.Sprint(x), "/")
			parts := strings.Split(spec, ":")
			var pp publishedPort
			switch len(parts) {
			case 1:
				pp.target = parts[0]
			case 2:
				pp.published, pp.target = parts[0], parts[1]
			case 3:
				pp.hostIP, pp.published, pp.target = parts[0], parts[1], parts[2]
			default:
				t.Fatalf("port %q: cannot parse", spec)
			}
			out = append(out, pp)
		}
	}
	return out
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// containerPorts are the ports a service listens on that other services may
// use: the targets of ports and the expose list.
func (s composeService) containerPorts(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, p := range s.ports(t) {
		out = append(out, p.target)
	}
	for _, e := range s.Expose {
		p, _, _ := strings.Cut(fmt.Sprint(e), "/")
		out = append(out, p)
	}
	return out
}

type mount struct{ source, target string }

// bindMounts returns the service's bind mounts (source relative to deploy/),
// and fails on named volumes that are not declared.
func (c composeFile) bindMounts(t *testing.T, name string) []mount {
	t.Helper()
	var out []mount
	for _, v := range c.service(t, name).Volumes {
		var src, dst string
		switch x := v.(type) {
		case map[string]any:
			src, dst = str(x["source"]), str(x["target"])
		default:
			parts := strings.Split(fmt.Sprint(x), ":")
			if len(parts) < 2 {
				continue // anonymous volume
			}
			src, dst = parts[0], parts[1]
		}
		if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
			out = append(out, mount{source: src, target: dst})
			continue
		}
		if _, ok := c.Volumes[src]; !ok {
			t.Errorf("service %s mounts volume %q, which is not declared under volumes:", name, src)
		}
	}
	return out
}

// hostPath maps a path inside a service's container to the file in this
// directory that a bind mount puts there ("" when none does).
func (c composeFile) hostPath(t *testing.T, service, containerPath string) string {
	t.Helper()
	for _, m := range c.bindMounts(t, service) {
		if containerPath == m.target {
			return filepath.FromSlash(m.source)
		}
		if rest, ok := strings.CutPrefix(containerPath, strings.TrimSuffix(m.target, "/")+"/"); ok {
			return filepath.Join(filepath.FromSlash(m.source), filepath.FromSlash(rest))
		}
	}
	return ""
}

// imageTag splits "repo[:tag][@digest]".
func imageTag(ref string) (repo, tag, digest string) {
	ref, digest, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:], digest
	}
	return ref, "", digest
}

func TestComposeServices(t *testing.T) {
	c := loadCompose(t)
	for k := range c.Rest {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("docker-compose.yml: unknown top-level key %q", k)
		}
	}
	for _, want := range []string{svcPostgres, svcOrchestrator, svcWorker, svcJaeger, svcPrometheus, svcGrafana} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("docker-compose.yml has no service %q", want)
		}
	}
	names := slices.Sorted(maps.Keys(c.Services))
	for _, name := range names {
		s := c.Services[name]
		for k := range s.Rest {
			t.Errorf("service %s: key %q is not one this test knows (typo? if it is a valid compose key, add it to composeService)", name, k)
		}
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s has neither image nor build", name)
		}
		if s.Image != "" {
			_, tag, digest := imageTag(s.Image)
			if (tag == "" || tag == "latest") && digest == "" {
				t.Errorf("service %s: image %q is not pinned to a version", name, s.Image)
			}
		}
		if s.Build != nil {
			ctxDir, dockerfile := ".", "Dockerfile"
			switch b := s.Build.(type) {
			case string:
				ctxDir = b
			case map[string]any:
				if v, ok := b["context"].(string); ok {
					ctxDir = v
				}
				if v, ok := b["dockerfile"].(string); ok {
					dockerfile = v
				}
			}
			if st, err := os.Stat(ctxDir); err != nil || !st.IsDir() {
				t.Errorf("service %s: build context %q is not a directory", name, ctxDir)
			}
			if _, err := os.Stat(filepath.Join(ctxDir, dockerfile)); err != nil {
				t.Errorf("service %s: dockerfile %q (relative to the context %q) does not exist", name, dockerfile, ctxDir)
			}
		}
		for dep, cond := range s.dependsOn(t) {
			d, ok := c.Services[dep]
			switch {
			case !ok:
				t.Errorf("service %s depends on %q, which is not a service", name, dep)
			case dep == name:
				t.Errorf("service %s depends on itself", name)
			case cond == "service_healthy" && !hasHealthcheck(t, d):
				t.Errorf("service %s waits for %s to be healthy, but %s has no healthcheck (compose or Dockerfile HEALTHCHECK)", name, dep, dep)
			case cond != "service_started" && cond != "service_healthy" && cond != "service_completed_successfully":
				t.Errorf("service %s: depends_on %s has unknown condition %q", name, dep, cond)
			}
		}
		for _, p := range s.ports(t) {
			if p.hostIP != "127.0.0.1" {
				t.Errorf("service %s publishes port %s on %q; publish on 127.0.0.1 only (\"127.0.0.1:%s:%s\")", name, p.target, p.hostIP, p.target, p.target)
			}
			if p.published == "" {
				t.Errorf("service %s: port %s has no fixed published port", name, p.target)
			}
		}
		for _, m := range c.bindMounts(t, name) {
			if _, err := os.Stat(filepath.FromSlash(m.source)); err != nil {
				t.Errorf("service %s mounts %s, which does not exist in deploy/", name, m.source)
			}
		}
	}
}

// hasHealthcheck: a compose healthcheck, or the HEALTHCHECK of the image
// built from deploy/Dockerfile.
func hasHealthcheck(t *testing.T, s composeService) bool {
	t.Helper()
	if s.Healthcheck != nil {
		return !s.Healthcheck.Disable
	}
	if s.Build == nil {
		return false
	}
	return len(loadDockerfile(t).runtime().all("HEALTHCHECK")) > 0
}

// TestComposePostgresPGMQVersion: the Postgres image is the pgmq project's,
// pinned to a release whose message records pgmq-go v0.6.0 can read (the
// range migrations/pgmq.go accepts).
func TestComposePostgresPGMQVersion(t *testing.T) {
	c := loadCompose(t)
	img := c.service(t, svcPostgres).Image
	repo, tag, _ := imageTag(img)
	if !strings.Contains(repo, "pgmq") {
		t.Errorf("postgres image %q is not an image that ships pgmq", img)
	}
	m := regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)$`).FindStringSubmatch(tag)
	if m == nil {
		t.Fatalf("postgres image %q: tag %q is not a pgmq release version (vX.Y.Z); pin one", img, tag)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	lo, hi := pgmqMinorRange(t)
	if major != 1 || minor < lo || minor > hi {
		t.Errorf("postgres image %q ships pgmq %s.%s.%s; the Go client needs 1.%d to 1.%d (DESIGN §6, migrations/pgmq.go)", img, m[1], m[2], m[3], lo, hi)
	}
}

// pgmqMinorRange reads minPGMQMinor and maxPGMQMinor from migrations/pgmq.go.
func pgmqMinorRange(t *testing.T) (int, int) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "migrations", "pgmq.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]int{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if i < len(vs.Values) {
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.INT {
					v, _ := strconv.Atoi(lit.Value)
					vals[name.Name] = v
				}
			}
		}
		return true
	})
	lo, ok1 := vals["minPGMQMinor"]
	hi, ok2 := vals["maxPGMQMinor"]
	if !ok1 || !ok2 {
		t.Fatal("migrations/pgmq.go no longer declares minPGMQMinor/maxPGMQMinor; update this test")
	}
	return lo, hi
}

// TestComposeTaskerEnv: every TASKER_ variable the Tasker services get is one
// the program reads, and the orchestrator's environment (over the image's
// and the config file the command names) is a valid configuration.
func TestComposeTaskerEnv(t *testing.T) {
	c := loadCompose(t)
	df := loadDockerfile(t)

	keys := map[string]string{}
	for _, k := range config.Keys() {
		keys[config.EnvName(k)] = k
	}
	imageEnv := df.runtime().env()
	for k := range imageEnv {
		if strings.HasPrefix(k, "TASKER_") && keys[k] == "" {
			t.Errorf("Dockerfile: ENV %s is not a configuration key (config.EnvName of none of config.Keys())", k)
		}
	}

	orch := c.service(t, svcOrchestrator)
	orchEnv := orch.env(t)
	for k := range orchEnv {
		if strings.HasPrefix(k, "TASKER_") && keys[k] == "" {
			t.Errorf("service %s: %s is not a configuration key (config.EnvName of none of config.Keys())", svcOrchestrator, k)
		}
	}
	if orchEnv["DATABASE_URL"] == "" {
		t.Errorf("service %s: DATABASE_URL is not set", svcOrchestrator)
	}
	// The configuration the container would load: the file named by
	// --config (copied into the image from config/), the image's ENV, then
	// the service's environment.
	cfgFile := ""
	args := append(stringList(orch.Entrypoint), stringList(orch.Command)...)
	for i, a := range args {
		if a == "--config" || a == "-c" {
			if i+1 < len(args) {
				cfgFile = df.repoPathOf(t, args[i+1])
			}
		} else if v, ok := strings.CutPrefix(a, "--config="); ok {
			cfgFile = df.repoPathOf(t, v)
		}
	}
	if cfgFile == "" {
		t.Errorf("service %s: the command names no --config file that the image copies from the repository", svcOrchestrator)
	}
	environ := []string{}
	for k, v := range imageEnv {
		environ = append(environ, k+"="+v)
	}
	for k, v := range orchEnv {
		environ = append(environ, k+"="+v)
	}
	cfg, err := config.Load(cfgFile, environ)
	if err != nil {
		t.Errorf("service %s: the configuration does not load: %v", svcOrchestrator, err)
	}
	if !cfg.Telemetry.TracingEnabled {
		t.Errorf("service %s: tracing is not enabled (TASKER_TELEMETRY_TRACING_ENABLED)", svcOrchestrator)
	}

	documented, read := workerEnvVars(t)
	wenv := c.service(t, svcWorker).env(t)
	for k := range wenv {
		if !strings.HasPrefix(k, "TASKER_") {
			continue
		}
		if !documented[k] {
			t.Errorf("service %s: %s is not documented in cmd/example-worker/main.go's package comment (documented: %v)", svcWorker, k, slices.Sorted(maps.Keys(documented)))
		}
		if !read[k] {
			t.Errorf("service %s: %s is not read by cmd/example-worker/main.go", svcWorker, k)
		}
	}
	if wenv["DATABASE_URL"] == "" {
		t.Errorf("service %s: DATABASE_URL is not set", svcWorker)
	}

	// Both connect to the compose Postgres with its credentials.
	pg := c.service(t, svcPostgres)
	pgEnv := pg.env(t)
	for _, svc := range []string{svcOrchestrator, svcWorker} {
		u, err := url.Parse(c.service(t, svc).env(t)["DATABASE_URL"])
		if err != nil {
			t.Errorf("service %s: DATABASE_URL: %v", svc, err)
			continue
		}
		pw, _ := u.User.Password()
		switch {
		case u.Hostname() != svcPostgres:
			t.Errorf("service %s: DATABASE_URL host %q is not the %s service", svc, u.Hostname(), svcPostgres)
		case !slices.Contains(append(pg.containerPorts(t), "5432"), u.Port()):
			t.Errorf("service %s: DATABASE_URL port %q is not a port of %s", svc, u.Port(), svcPostgres)
		case u.User.Username() != pgEnv["POSTGRES_USER"] || pw != pgEnv["POSTGRES_PASSWORD"]:
			t.Errorf("service %s: DATABASE_URL user/password do not match POSTGRES_USER/POSTGRES_PASSWORD", svc)
		case strings.TrimPrefix(u.Path, "/") != pgEnv["POSTGRES_DB"]:
			t.Errorf("service %s: DATABASE_URL database %q is not POSTGRES_DB %q", svc, u.Path, pgEnv["POSTGRES_DB"])
		}
	}
}

// workerEnvVars returns the TASKER_ variables documented in the example
// worker's package comment and those its code reads (string literals).
func workerEnvVars(t *testing.T) (documented, read map[string]bool) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "cmd", "example-worker", "main.go"), nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	if f.Doc == nil {
		t.Fatal("cmd/example-worker/main.go has no package comment")
	}
	documented, read = map[string]bool{}, map[string]bool{}
	for _, v := range regexp.MustCompile(`\bTASKER_[A-Z0-9_]*[A-Z0-9]\b`).FindAllString(f.Doc.Text(), -1) {
		documented[v] = true
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if s, err := strconv.Unquote(lit.Value); err == nil && regexp.MustCompile(`^TASKER_[A-Z0-9_]+$`).MatchString(s) {
				read[s] = true
			}
		}
		return true
	})
	if len(documented) == 0 {
		t.Fatal("cmd/example-worker/main.go's package comment documents no TASKER_ variable")
	}
	return documented, read
}

func hostPort(t *testing.T, what, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", what, addr, err)
	}
	return h, p
}

// TestPortsAgree: the port each Tasker service listens on is the port
// Prometheus scrapes, the port published, the port its health check asks;
// the OTLP endpoints are Jaeger's.
func TestPortsAgree(t *testing.T) {
	c := loadCompose(t)
	df := loadDockerfile(t)
	targets := scrapeTargets(t)

	check := func(svc, listenVar, listen, healthURL, healthWhat string) {
		host, port := hostPort(t, svc+" "+listenVar, listen)
		if host == "127.0.0.1" || host == "localhost" {
			t.Errorf("service %s: %s=%s listens on loopback: nothing outside the container can reach it", svc, listenVar, listen)
		}
		if got := targets[svc]; !slices.Contains(got, port) {
			t.Errorf("service %s listens on %s (%s) but Prometheus scrapes it on %v", svc, port, listenVar, got)
		}
		published := false
		for _, p := range c.service(t, svc).ports(t) {
			if p.target == port {
				published = true
			}
		}
		if !published {
			t.Errorf("service %s listens on %s (%s) but does not publish it", svc, port, listenVar)
		}
		u, err := url.Parse(healthURL)
		if healthURL == "" || err != nil {
			t.Errorf("service %s: %s has no http URL", svc, healthWhat)
		} else if u.Port() != port || u.Path != "/healthz" {
			t.Errorf("service %s: %s asks %s, not /healthz on port %s (%s)", svc, healthWhat, healthURL, port, listenVar)
		}
	}

	orch := c.service(t, svcOrchestrator)
	listen := orch.env(t)["TASKER_SERVER_LISTEN"]
	if listen == "" {
		listen = df.runtime().env()["TASKER_SERVER_LISTEN"]
	}
	if listen == "" {
		t.Fatalf("service %s: TASKER_SERVER_LISTEN is not set (the default is loopback)", svcOrchestrator)
	}
	var imageHealth string
	if hc := df.runtime().all("HEALTHCHECK"); len(hc) > 0 {
		imageHealth = firstURL(hc[len(hc)-1])
	}
	orchHealth, orchHealthWhat := imageHealth, "the Dockerfile HEALTHCHECK"
	if orch.Healthcheck != nil {
		orchHealth, orchHealthWhat = firstURL(strings.Join(stringList(orch.Healthcheck.Test), " ")), "its healthcheck"
	}
	check(svcOrchestrator, "TASKER_SERVER_LISTEN", listen, orchHealth, orchHealthWhat)
	_, port := hostPort(t, "TASKER_SERVER_LISTEN", listen)
	if exposed := df.runtime().exposed(); !slices.Contains(exposed, port) {
		t.Errorf("Dockerfile EXPOSEs %v, not the orchestrator's port %s", exposed, port)
	}
	if u, err := url.Parse(imageHealth); imageHealth == "" || err != nil || u.Port() != port {
		t.Errorf("Dockerfile HEALTHCHECK asks %q, not the orchestrator's port %s", imageHealth, port)
	}

	w := c.service(t, svcWorker)
	wlisten := w.env(t)["TASKER_WORKER_METRICS_LISTEN"]
	if wlisten == "" {
		t.Fatalf("service %s: TASKER_WORKER_METRICS_LISTEN is not set (the default is loopback)", svcWorker)
	}
	wHealth := imageHealth
	if w.Healthcheck != nil {
		wHealth = firstURL(strings.Join(stringList(w.Healthcheck.Test), " "))
	}
	check(svcWorker, "TASKER_WORKER_METRICS_LISTEN", wlisten, wHealth, "its healthcheck")

	// Traces go to Jaeger's OTLP gRPC port, in plaintext.
	jaeger := c.service(t, svcJaeger)
	jports := jaeger.containerPorts(t)
	for svc, v := range map[string]string{
		svcOrchestrator: "TASKER_TELEMETRY_OTLP_ENDPOINT",
		svcWorker:       "OTEL_EXPORTER_OTLP_ENDPOINT",
	} {
		env := c.service(t, svc).env(t)
		ep := env[v]
		if ep == "" {
			t.Errorf("service %s: %s is not set; traces would go nowhere", svc, v)
			continue
		}
		if env["TASKER_TELEMETRY_TRACING_ENABLED"] != "true" {
			t.Errorf("service %s: TASKER_TELEMETRY_TRACING_ENABLED is not true", svc)
		}
		proto := env["TASKER_TELEMETRY_OTLP_PROTOCOL"]
		if proto == "" {
			proto = "grpc"
		}
		hp, plaintext := strings.CutPrefix(ep, "http://")
		if !plaintext {
			t.Errorf("service %s: %s=%s: use http://host:port, or the exporter tries TLS against Jaeger's plaintext receiver", svc, v, ep)
			hp = strings.TrimPrefix(ep, "https://")
		}
		h, p := hostPort(t, svc+" "+v, strings.TrimSuffix(hp, "/"))
		if h != svcJaeger {
			t.Errorf("service %s: %s host %q is not the %s service", svc, v, h, svcJaeger)
		}
		if !slices.Contains(jports, p) {
			t.Errorf("service %s: %s port %s is not one %s exposes (%v)", svc, v, p, svcJaeger, jports)
		}
		if want := map[string]string{"grpc": "4317", "http/protobuf": "4318", "http": "4318"}[proto]; p != want {
			t.Errorf("service %s: %s port %s is not the OTLP %s port %s", svc, v, p, proto, want)
		}
	}
	if !slices.Contains(jports, "16686") {
		t.Errorf("service %s does not publish the UI port 16686", svcJaeger)
	}
}

var urlRe = regexp.MustCompile(`https?://[^\s"'\]]+`)

func firstURL(s string) string { return urlRe.FindString(s) }

// ------------------------------------------------------------- prometheus --

type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func loadPromConfig(t *testing.T) promConfig {
	t.Helper()
	var p promConfig
	readYAML(t, filepath.Join("prometheus", "prometheus.yml"), &p)
	return p
}

// scrapeTargets maps a target host to the ports scraped on it.
func scrapeTargets(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, sc := range loadPromConfig(t).ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				h, p := hostPort(t, "scrape target", target)
				out[h] = append(out[h], p)
			}
		}
	}
	return out
}

func promJobs(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, sc := range loadPromConfig(t).ScrapeConfigs {
		out[sc.JobName] = true
	}
	return out
}

func TestPrometheusConfig(t *testing.T) {
	c := loadCompose(t)
	p := loadPromConfig(t)
	if len(p.ScrapeConfigs) == 0 {
		t.Fatal("prometheus.yml has no scrape_configs")
	}
	jobs := map[string]bool{}
	for _, sc := range p.ScrapeConfigs {
		if sc.JobName == "" || jobs[sc.JobName] {
			t.Errorf("prometheus.yml: job name %q is empty or repeated", sc.JobName)
		}
		jobs[sc.JobName] = true
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("prometheus.yml: job %s scrapes %s; Tasker serves /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				h, _ := hostPort(t, "scrape target", target)
				if _, ok := c.Services[h]; !ok {
					t.Errorf("prometheus.yml: job %s scrapes %s, which is not a compose service", sc.JobName, target)
				}
			}
		}
	}
	for _, svc := range []string{svcOrchestrator, svcWorker} {
		if len(scrapeTargets(t)[svc]) == 0 {
			t.Errorf("prometheus.yml does not scrape the %s service", svc)
		}
	}
	if len(p.RuleFiles) == 0 {
		t.Error("prometheus.yml loads no rule_files")
	}
	for _, rf := range p.RuleFiles {
		hp := c.hostPath(t, svcPrometheus, rf)
		if hp == "" {
			t.Errorf("prometheus.yml: rule file %s is not mounted into the %s service", rf, svcPrometheus)
			continue
		}
		if _, err := os.Stat(hp); err != nil {
			t.Errorf("prometheus.yml: rule file %s is mounted from %s, which does not exist", rf, hp)
		}
	}
	// The configuration file itself is where the command says.
	cfgPath := "/etc/prometheus/prometheus.yml"
	for _, a := range stringList(c.service(t, svcPrometheus).Command) {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			cfgPath = v
		}
	}
	if hp := c.hostPath(t, svcPrometheus, cfgPath); hp != filepath.Join("prometheus", "prometheus.yml") {
		t.Errorf("service %s reads %s, which is mounted from %q, not prometheus/prometheus.yml", svcPrometheus, cfgPath, hp)
	}
}

type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadAlerts(t *testing.T) alertRules {
	t.Helper()
	var a alertRules
	readYAML(t, filepath.Join("prometheus", "alerts.yml"), &a)
	return a
}

// alertExprs maps a rule name to its expression.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, g := range loadAlerts(t).Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert+r.Record] = r.Expr
		}
	}
	return out
}

func TestAlertRules(t *testing.T) {
	a := loadAlerts(t)
	jobs := promJobs(t)
	seen := map[string]bool{}
	var all []string
	for _, g := range a.Groups {
		if g.Name == "" {
			t.Error("alerts.yml: a group has no name")
		}
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			all = append(all, r.Expr)
			if r.Alert == "" {
				t.Errorf("alerts.yml: a rule in group %s is not an alert", g.Name)
			}
			if seen[name] {
				t.Errorf("alerts.yml: %s is defined twice", name)
			}
			seen[name] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("alerts.yml: %s has no expr", name)
			}
			if err := balanced(r.Expr); err != nil {
				t.Errorf("alerts.yml: %s: %v", name, err)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alerts.yml: %s: for %q: %v", name, r.For, err)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alerts.yml: %s needs a severity label and a summary annotation", name)
			}
			for _, j := range jobRefs(r.Expr) {
				if !jobs[j] {
					t.Errorf("alerts.yml: %s refers to job %q, which prometheus.yml does not scrape", name, j)
				}
			}
		}
	}
	// The alerts the operations issue asks for, by what they watch.
	joined := strings.Join(all, "\n")
	for what, needle := range map[string]string{
		"stuck worker queue":   "tasker_queue_oldest_message_age_seconds",
		"task failure rate":    `tasker_task_completion_duration_seconds_count{outcome="error"}`,
		"poison messages":      "tasker_poison_messages_total",
		"orchestrator down":    `up{job="orchestrator"} == 0`,
		"DB pool exhausted":    `tasker_db_pool_connections{state="acquired"}`,
		"DB pool size (ratio)": `tasker_db_pool_connections{state="max"}`,
	} {
		if !strings.Contains(joined, needle) {
			t.Errorf("alerts.yml has no %s alert (no expression uses %s)", what, needle)
		}
	}
}

// balanced checks (), [] and {} outside string literals.
func balanced(expr string) error {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inStr := false
	for i, r := range expr {
		switch {
		case r == '"' && (i == 0 || expr[i-1] != '\\'):
			inStr = !inStr
		case inStr:
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return fmt.Errorf("unbalanced %q at offset %d in %q", r, i, expr)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inStr || len(stack) > 0 {
		return fmt.Errorf("unterminated string or bracket in %q", expr)
	}
	return nil
}

// jobRefs returns the job names an expression selects (job="x", job=~"a|b").
func jobRefs(expr string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`\bjob\s*(=~|=)\s*"([^"]*)"`).FindAllStringSubmatch(expr, -1) {
		if m[1] == "=" {
			out = append(out, m[2])
			continue
		}
		for _, alt := range strings.Split(m[2], "|") {
			if regexp.MustCompile(`^[a-zA-Z0-9_-]+$`).MatchString(alt) {
				out = append(out, alt)
			}
		}
	}
	return out
}

// ---------------------------------------------------------------- grafana --

type grafanaDatasources struct {
	Datasources []struct {
		Name      string `yaml:"name"`
		UID       string `yaml:"uid"`
		Type      string `yaml:"type"`
		URL       string `yaml:"url"`
		IsDefault bool   `yaml:"isDefault"`
	} `yaml:"datasources"`
}

type grafanaDashboards struct {
	Providers []struct {
		Name    string `yaml:"name"`
		Type    string `yaml:"type"`
		Options struct {
			Path string `yaml:"path"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a row's collapsed panels
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func promDatasourceUID(t *testing.T) string {
	t.Helper()
	var ds grafanaDatasources
	readYAML(t, filepath.Join("grafana", "provisioning", "datasources", "prometheus.yml"), &ds)
	var uids []string
	for _, d := range ds.Datasources {
		if d.Type == "prometheus" {
			uids = append(uids, d.UID)
		}
	}
	if len(uids) != 1 || uids[0] == "" {
		t.Fatalf("grafana datasources: want one prometheus datasource with a uid, got %v", uids)
	}
	return uids[0]
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("grafana", "dashboards", "tasker.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("grafana/dashboards/tasker.json: %v", err)
	}
	return d
}

// flatPanels returns every panel, rows' nested panels included.
func flatPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flatPanels(p.Panels)...)
	}
	return out
}

// dashboardExprs maps "panel title/refId" to its expression.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range flatPanels(loadDashboard(t).Panels) {
		for _, tg := range p.Targets {
			out["panel "+p.Title+"/"+tg.RefID] = tg.Expr
		}
	}
	return out
}

func TestGrafanaProvisioning(t *testing.T) {
	c := loadCompose(t)
	uid := promDatasourceUID(t)

	var ds grafanaDatasources
	readYAML(t, filepath.Join("grafana", "provisioning", "datasources", "prometheus.yml"), &ds)
	for _, d := range ds.Datasources {
		u, err := url.Parse(d.URL)
		if err != nil {
			t.Errorf("datasource %s: url %q: %v", d.Name, d.URL, err)
			continue
		}
		if _, ok := c.Services[u.Hostname()]; !ok {
			t.Errorf("datasource %s: url %s does not name a compose service", d.Name, d.URL)
		} else if ports := c.service(t, u.Hostname()).containerPorts(t); !slices.Contains(ports, u.Port()) {
			t.Errorf("datasource %s: url %s: port %s is not one %s listens on (%v)", d.Name, d.URL, u.Port(), u.Hostname(), ports)
		}
	}

	// Grafana reads its provisioning from /etc/grafana/provisioning.
	if hp := c.hostPath(t, svcGrafana, "/etc/grafana/provisioning/datasources/prometheus.yml"); hp != filepath.Join("grafana", "provisioning", "datasources", "prometheus.yml") {
		t.Errorf("service %s: the datasource file is not mounted under /etc/grafana/provisioning (got %q)", svcGrafana, hp)
	}
	var dp grafanaDashboards
	readYAML(t, filepath.Join("grafana", "provisioning", "dashboards", "dashboards.yml"), &dp)
	if len(dp.Providers) == 0 {
		t.Fatal("dashboards.yml has no providers")
	}
	for _, p := range dp.Providers {
		hp := c.hostPath(t, svcGrafana, path.Join(p.Options.Path, "tasker.json"))
		if hp == "" {
			t.Errorf("dashboard provider %s reads %s, which is not mounted into the %s service", p.Name, p.Options.Path, svcGrafana)
		} else if _, err := os.Stat(hp); err != nil {
			t.Errorf("dashboard provider %s: %v", p.Name, err)
		}
	}
	if home := c.service(t, svcGrafana).env(t)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
		if hp := c.hostPath(t, svcGrafana, home); hp == "" {
			t.Errorf("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH %s is not mounted", home)
		} else if _, err := os.Stat(hp); err != nil {
			t.Errorf("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: %v", err)
		}
	}

	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	jobs := promJobs(t)
	ids := map[int]bool{}
	queries := 0
	for _, p := range flatPanels(d.Panels) {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d is repeated", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != uid {
			t.Errorf("panel %q: datasource %+v; want uid %q (the provisioned Prometheus)", p.Title, p.Datasource, uid)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			if tg.Datasource != nil && tg.Datasource.UID != uid {
				t.Errorf("panel %q query %s: datasource uid %q; want %q", p.Title, tg.RefID, tg.Datasource.UID, uid)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q query %s has no expr", p.Title, tg.RefID)
			}
			if err := balanced(tg.Expr); err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
			for _, j := range jobRefs(tg.Expr) {
				if !jobs[j] {
					t.Errorf("panel %q refers to job %q, which prometheus.yml does not scrape", p.Title, j)
				}
			}
		}
	}
	// The panels the operations issue asks for, by the metric each shows.
	var all []string
	for _, e := range dashboardExprs(t) {
		all = append(all, e)
	}
	joined := strings.Join(all, "\n")
	for _, needle := range []string{
		"tasker_task_completion_duration_seconds_count",
		"tasker_step_execution_duration_seconds_bucket",
		"handler_name",
		"tasker_queue_depth",
		"tasker_queue_oldest_message_age_seconds",
		`tasker_step_attempts_total{outcome="failure"}`,
		`tasker_task_state_transitions_total{to_state="waiting_for_retry"}`,
		"tasker_events_total",
	} {
		if !strings.Contains(joined, needle) {
			t.Errorf("the dashboard has no panel using %s", needle)
		}
	}
}

// ------------------------------------------------------------- dockerfile --

type instruction struct {
	cmd  string // upper case
	args string
}

type stage struct {
	from, name string
	ins        []instruction
}

type dockerfile struct{ stages []stage }

func loadDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var df dockerfile
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			st := stage{from: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			df.stages = append(df.stages, st)
			return
		}
		if len(df.stages) == 0 {
			t.Fatalf("Dockerfile: %s before FROM", in.cmd)
		}
		df.stages[len(df.stages)-1].ins = append(df.stages[len(df.stages)-1].ins, in)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(df.stages) < 2 {
		t.Fatalf("Dockerfile: want a multi-stage build, got %d stage(s)", len(df.stages))
	}
	return df
}

func (df dockerfile) runtime() stage { return df.stages[len(df.stages)-1] }

func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// env returns the stage's ENV values ("K=V ..." or "K V").
func (s stage) env() map[string]string {
	out := map[string]string{}
	for _, a := range s.all("ENV") {
		if !strings.Contains(strings.Fields(a)[0], "=") {
			k, v, _ := strings.Cut(a, " ")
			out[k] = strings.TrimSpace(v)
			continue
		}
		for _, kv := range strings.Fields(a) {
			k, v, _ := strings.Cut(kv, "=")
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}

func (s stage) exposed() []string {
	var out []string
	for _, a := range s.all("EXPOSE") {
		for _, p := range strings.Fields(a) {
			p, _, _ = strings.Cut(p, "/")
			out = append(out, p)
		}
	}
	return out
}

type copyIns struct {
	from string
	srcs []string
	dst  string
}

func (s stage) copies() []copyIns {
	var out []copyIns
	for _, a := range s.all("COPY") {
		var c copyIns
		var rest []string
		for _, f := range strings.Fields(a) {
			if v, ok := strings.CutPrefix(f, "--from="); ok {
				c.from = v
			} else if !strings.HasPrefix(f, "--") {
				rest = append(rest, f)
			}
		}
		if len(rest) < 2 {
			continue
		}
		c.srcs, c.dst = rest[:len(rest)-1], rest[len(rest)-1]
		out = append(out, c)
	}
	return out
}

// repoPathOf maps a path inside the image to the repository file the
// runtime stage copies there ("" when none).
func (df dockerfile) repoPathOf(t *testing.T, imagePath string) string {
	t.Helper()
	for _, c := range df.runtime().copies() {
		if c.from != "" || len(c.srcs) != 1 {
			continue
		}
		dst := strings.TrimSuffix(c.dst, "/")
		if rest, ok := strings.CutPrefix(imagePath, dst+"/"); ok {
			p := filepath.Join(repoRoot, filepath.FromSlash(c.srcs[0]), filepath.FromSlash(rest))
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s in the image comes from %s, which does not exist", imagePath, p)
			}
			return p
		}
	}
	return ""
}

// binaries maps each program path in the runtime image to the cmd/ package
// it was built from.
func (df dockerfile) binaries(t *testing.T) map[string]string {
	t.Helper()
	built := map[string]string{} // build output path -> ./cmd/x
	buildRe := regexp.MustCompile(`go build\b[^&;]*?-o\s+(\S+)\s+(\./cmd/[A-Za-z0-9_./-]+)`)
	for _, st := range df.stages[:len(df.stages)-1] {
		for _, run := range st.all("RUN") {
			for _, m := range buildRe.FindAllStringSubmatch(run, -1) {
				built[m[1]] = m[2]
			}
		}
	}
	out := map[string]string{}
	for _, c := range df.runtime().copies() {
		if c.from == "" {
			continue
		}
		for _, src := range c.srcs {
			pkg, ok := built[src]
			if !ok {
				continue
			}
			dst := c.dst
			if strings.HasSuffix(dst, "/") || len(c.srcs) > 1 {
				dst = path.Join(dst, path.Base(src))
			}
			out[dst] = pkg
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	df := loadDockerfile(t)
	for _, st := range df.stages {
		if st.from == "scratch" {
			continue
		}
		if _, tag, digest := imageTag(st.from); (tag == "" || tag == "latest") && digest == "" {
			if !slices.ContainsFunc(df.stages, func(s stage) bool { return s.name == st.from }) {
				t.Errorf("Dockerfile: FROM %s is not pinned to a version", st.from)
			}
		}
	}
	build := df.stages[0]
	if !strings.HasPrefix(build.from, "golang:") {
		t.Errorf("Dockerfile: the build stage is FROM %s, want golang:", build.from)
	}
	if build.env()["CGO_ENABLED"] != "0" {
		t.Error("Dockerfile: the build stage does not set CGO_ENABLED=0 (the runtime image has no C library for cgo binaries)")
	}
	if !slices.ContainsFunc(build.all("RUN"), func(r string) bool { return strings.Contains(r, "--mount=type=cache,target=/go/pkg/mod") }) {
		t.Error("Dockerfile: the build does not use a module cache mount")
	}

	// Every package built exists and is a command; every command is built.
	var cmds []string
	entries, err := os.ReadDir(filepath.Join(repoRoot, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			cmds = append(cmds, "./cmd/"+e.Name())
		}
	}
	bins := df.binaries(t)
	var built []string
	for _, pkg := range bins {
		built = append(built, pkg)
		dir := filepath.Join(repoRoot, filepath.FromSlash(pkg))
		if !isMainPackage(t, dir) {
			t.Errorf("Dockerfile builds %s, which is not a main package in the repository", pkg)
		}
	}
	sort.Strings(built)
	sort.Strings(cmds)
	if !slices.Equal(built, cmds) {
		t.Errorf("Dockerfile copies binaries of %v into the image; the repository's commands are %v", built, cmds)
	}

	// Every path copied from the build context exists.
	for _, st := range df.stages {
		for _, c := range st.copies() {
			if c.from != "" {
				continue
			}
			for _, src := range c.srcs {
				if _, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(src))); err != nil {
					t.Errorf("Dockerfile: COPY %s: not in the repository", src)
				}
			}
		}
	}

	// The entrypoints run the programs built.
	var ep []string
	if eps := df.runtime().all("ENTRYPOINT"); len(eps) > 0 {
		if err := json.Unmarshal([]byte(eps[len(eps)-1]), &ep); err != nil || len(ep) == 0 {
			t.Errorf("Dockerfile: ENTRYPOINT %s is not in JSON form", eps[len(eps)-1])
		}
	}
	if len(ep) == 0 || bins[ep[0]] != "./cmd/orchestrator" {
		t.Errorf("Dockerfile: ENTRYPOINT %v does not run the orchestrator built from ./cmd/orchestrator (binaries: %v)", ep, bins)
	}
	c := loadCompose(t)
	for svc, pkg := range map[string]string{svcOrchestrator: "./cmd/orchestrator", svcWorker: "./cmd/example-worker"} {
		s := c.service(t, svc)
		prog := ep
		if e := stringList(s.Entrypoint); len(e) > 0 {
			prog = e
		}
		if len(prog) == 0 || bins[prog[0]] != pkg {
			t.Errorf("service %s runs %v, not the binary built from %s (binaries: %v)", svc, prog, pkg, bins)
		}
	}
	if args := stringList(c.service(t, svcOrchestrator).Command); len(args) == 0 || args[0] != "serve" {
		t.Errorf("service %s: command %v does not start with serve", svcOrchestrator, args)
	}

	// The ignore file keeps out nothing the build needs.
	raw, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum", "config"}
	for _, e := range mustReadDir(t, repoRoot) {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && hasGoFiles(t, filepath.Join(repoRoot, e.Name())) {
			needed = append(needed, e.Name())
		}
	}
	for _, line := range strings.Split(string(raw), "\n") {
		pat := strings.TrimPrefix(strings.TrimSpace(line), "/")
		if pat == "" || strings.HasPrefix(pat, "#") || strings.HasPrefix(pat, "!") {
			continue
		}
		for _, n := range needed {
			if ok, _ := filepath.Match(pat, n); ok || pat == n {
				t.Errorf("Dockerfile.dockerignore: %q excludes %s, which the build needs", line, n)
			}
		}
	}
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func hasGoFiles(t *testing.T, dir string) bool {
	t.Helper()
	found := false
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		switch {
		case err != nil:
			return filepath.SkipDir
		case d.IsDir() && p != dir && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")):
			return filepath.SkipDir
		case !d.IsDir() && strings.HasSuffix(p, ".go"):
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

func isMainPackage(t *testing.T, dir string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		return false
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		pf, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly)
		if err == nil && pf.Name.Name == "main" {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------- metrics --

type docMetric struct {
	typ string
}

// readMetricsDoc reads the table of docs/metrics.md: name -> type.
func readMetricsDoc(t *testing.T) map[string]docMetric {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(tasker_[a-z_]+)` \\| ([a-z]+) \\|")
	out := map[string]docMetric{}
	for _, line := range strings.Split(string(raw), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			out[m[1]] = docMetric{typ: m[2]}
		}
	}
	if len(out) < 10 {
		t.Fatalf("docs/metrics.md lists only %d metrics; the table format changed?", len(out))
	}
	return out
}

// exposedFamily is a gathered metric family: its type and label names.
type exposedFamily struct {
	typ    string
	labels map[string]bool
}

// gatherExposed runs a real orchestrator (engine, loops, queue and pool
// gauges) and a real Go worker with the OTel observer in-process, completes
// a task of the demo workflow, archives a poison message and serves an HTTP
// request, then gathers the Prometheus registry.
func gatherExposed(t *testing.T) map[string]exposedFamily {
	t.Helper()
	h := enginetest.New(t, enginetest.Options{})
	h.RegisterFile(filepath.Join(repoRoot, "config", "templates", "order_fulfillment.yaml"))
	obs, err := worker.NewOTelObserver(h.Provider.TracerProvider(), h.Provider.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	h.Worker(worker.Config{Namespaces: []string{demo.Namespace}, Observer: obs}, demo.Handlers(0))
	task := h.Submit(orchestration.TaskRequest{Namespace: demo.Namespace, Name: "order_fulfillment", Context: json.RawMessage(demo.SampleContext(1))})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	if _, err := queue.Send(context.Background(), h.Pool, queue.StepResultsQueue, json.RawMessage(`{"not":"a notice"}`), nil, 0); err != nil {
		t.Fatal(err)
	}
	enginetest.Eventually(t, 10*time.Second, "poison message archived", func() bool {
		var n int
		_ = h.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pgmq.a_orchestration_step_results`).Scan(&n)
		return n == 1
	})
	srv := httptest.NewServer(h.Provider.HTTPMiddleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	defer srv.Close()
	if resp, err := http.Get(srv.URL + "/x"); err == nil {
		resp.Body.Close()
	}
	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]exposedFamily{}
	for _, mf := range mfs {
		f := exposedFamily{typ: strings.ToLower(mf.GetType().String()), labels: map[string]bool{}}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				f.labels[l.GetName()] = true
			}
		}
		out[mf.GetName()] = f
	}
	return out
}

var (
	metricRe   = regexp.MustCompile(`tasker_[a-z_]+`)
	selectorRe = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	groupingRe = regexp.MustCompile(`\b(by|without|on|ignoring)\s*\(([^)]*)\)`)
)

// Labels Prometheus adds to every scraped series.
var targetLabels = map[string]bool{"job": true, "instance": true}

// baseMetric resolves a name used in PromQL to its docs/metrics.md family:
// the name itself, or for a histogram the name without _bucket/_count/_sum.
func baseMetric(doc map[string]docMetric, name string) (base, suffix string, ok bool) {
	if _, ok := doc[name]; ok {
		return name, "", true
	}
	for _, s := range []string{"_bucket", "_count", "_sum"} {
		if b, found := strings.CutSuffix(name, s); found {
			if d, ok := doc[b]; ok && d.typ == "histogram" {
				return b, s, true
			}
		}
	}
	return "", "", false
}

// TestMetricsUsedAreDocumentedAndExposed: every tasker_* metric that an
// alert or a dashboard panel queries is in docs/metrics.md and is exposed by
// the real orchestrator and worker; the labels the queries select and group
// by are labels those metrics have; state and event label values are real.
func TestMetricsUsedAreDocumentedAndExposed(t *testing.T) {
	t.Parallel()
	exprs := alertExprs(t)
	for k, v := range dashboardExprs(t) {
		exprs[k] = v
	}
	doc := readMetricsDoc(t)
	exposed := gatherExposed(t)

	taskStates := map[string]bool{"none": true}
	for _, s := range lifecycle.TaskStates {
		taskStates[string(s)] = true
	}
	stepStates := map[string]bool{"none": true}
	for _, s := range lifecycle.StepStates {
		stepStates[string(s)] = true
	}
	events := map[string]bool{}
	for _, e := range lifecycle.Catalog() {
		events[string(e.Name)] = true
	}

	where := slices.Sorted(maps.Keys(exprs))
	used := 0
	for _, w := range where {
		expr := exprs[w]
		// Labels the metrics of this expression carry.
		known := map[string]bool{}
		for l := range targetLabels {
			known[l] = true
		}
		for _, name := range metricRe.FindAllString(expr, -1) {
			used++
			base, suffix, ok := baseMetric(doc, name)
			if !ok {
				t.Errorf("%s: %s is not listed in docs/metrics.md (expr %q)", w, name, expr)
				continue
			}
			if doc[base].typ == "histogram" && suffix == "" {
				t.Errorf("%s: %s is a histogram; query %s_bucket, _count or _sum", w, name, name)
			}
			f, ok := exposed[base]
			if !ok {
				t.Errorf("%s: %s is documented but not exposed by the orchestrator or the worker SDK", w, base)
				continue
			}
			for l := range f.labels {
				known[l] = true
			}
			if suffix == "_bucket" {
				known["le"] = true
			}
		}
		for _, sel := range selectorRe.FindAllStringSubmatch(expr, -1) {
			name, matchers := sel[1], sel[2]
			base, suffix, isTasker := baseMetric(doc, name)
			for _, m := range matcherRe.FindAllStringSubmatch(matchers, -1) {
				label, op, value := m[1], m[2], m[3]
				if !isTasker {
					continue
				}
				f := exposed[base]
				if !f.labels[label] && !targetLabels[label] && !(label == "le" && suffix == "_bucket") {
					t.Errorf("%s: %s has no label %q (it has %v)", w, name, label, slices.Sorted(maps.Keys(f.labels)))
				}
				if op != "=" {
					continue
				}
				var valid map[string]bool
				switch {
				case strings.HasPrefix(base, "tasker_task_") && (label == "to_state" || label == "from_state" || label == "state" || label == "outcome"):
					valid = taskStates
				case strings.HasPrefix(base, "tasker_step_state_") && (label == "to_state" || label == "from_state"):
					valid = stepStates
				case label == "event":
					valid = events
				}
				if valid != nil && !valid[value] {
					t.Errorf("%s: %s{%s=%q}: %q is not a value %s takes", w, name, label, value, value, label)
				}
			}
		}
		for _, g := range groupingRe.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(g[2], ",") {
				if l = strings.TrimSpace(l); l != "" && !known[l] {
					t.Errorf("%s: %s (%s): no metric of the expression has label %q", w, g[1], g[2], l)
				}
			}
		}
	}
	if used == 0 {
		t.Fatal("no tasker_ metric found in the alerts and the dashboard")
	}
}
