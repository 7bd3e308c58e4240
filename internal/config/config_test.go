package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/config"
)

// TestExampleFileDocumentsEveryKeyWithItsDefault keeps config/orchestrator.toml
// true: it parses to exactly the defaults, and names every key.
func TestExampleFileDocumentsEveryKeyWithItsDefault(t *testing.T) {
	t.Parallel()
	path := filepath.Join("..", "..", "config", "orchestrator.toml")
	cfg, err := config.Load(path, []string{"DATABASE_URL=postgres://u@localhost/db"})
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.Database.URL = "postgres://u@localhost/db"
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("the example file does not parse to the defaults:\n got %+v\nwant %+v", cfg, want)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for _, key := range config.Keys() {
		parts := strings.Split(key, ".")
		leaf := parts[len(parts)-1]
		scalar := regexp.MustCompile(`(?m)^#?\s*` + regexp.QuoteMeta(leaf) + `\s*=`)
		table := regexp.MustCompile(`(?m)^#?\s*\[\[` + regexp.QuoteMeta(key) + `\]\]`)
		if !scalar.MatchString(text) && !table.MatchString(text) {
			t.Errorf("config/orchestrator.toml does not document %s", key)
		}
	}
}

func TestEnvironmentOverridesEveryScalarKey(t *testing.T) {
	t.Parallel()
	env := []string{
		"DATABASE_URL=postgres://a@h/db",
		"TASKER_SERVER_LISTEN=0.0.0.0:9000",
		"TASKER_ORCHESTRATOR_BATCH_SIZE=7",
		"TASKER_ORCHESTRATOR_POLL_INTERVAL=250ms",
		"TASKER_TELEMETRY_TRACING_ENABLED=true",
		"TASKER_LOG_FORMAT=text",
		"TASKER_TELEMETRY_TRACE_SAMPLE_RATIO=0.25",
	}
	cfg, err := config.Load("", env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "0.0.0.0:9000" || cfg.Orchestrator.BatchSize != 7 ||
		cfg.Orchestrator.PollInterval.Duration != 250*time.Millisecond || !cfg.Telemetry.TracingEnabled || cfg.Log.Format != "text" ||
		cfg.Telemetry.TraceSampleRatio != 0.25 {
		t.Errorf("overrides not applied: %+v", cfg)
	}
	cfg, err = config.Load("", []string{"DATABASE_URL=postgres://a@h/db", "TASKER_DATABASE_URL=postgres://b@h/db"})
	if err != nil || cfg.Database.URL != "postgres://b@h/db" {
		t.Errorf("TASKER_DATABASE_URL must win over DATABASE_URL: %v %s", err, cfg.Database.URL)
	}
	for _, k := range config.Keys() {
		if !strings.HasPrefix(config.EnvName(k), "TASKER_") {
			t.Errorf("key %s has env name %s", k, config.EnvName(k))
		}
	}
}

func TestValidationNamesTheBadKey(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"TASKER_ORCHESTRATOR_BATCH_SIZE=0":          "orchestrator.batch_size",
		"TASKER_ORCHESTRATOR_RESULT_LOOPS=0":        "orchestrator.result_loops",
		"TASKER_ORCHESTRATOR_RESULT_LOOPS=33":       "orchestrator.result_loops",
		"TASKER_LOG_LEVEL=loud":                     "log.level",
		"TASKER_TELEMETRY_OTLP_PROTOCOL=carrier":    "telemetry.otlp_protocol",
		"TASKER_TELEMETRY_OTLP_ENCODER=fast":        "telemetry.otlp_encoder",
		"TASKER_AUTH_ENABLED=true":                  "auth.keys",
		"TASKER_TELEMETRY_TRACE_SAMPLE_RATIO=2":     "telemetry.trace_sample_ratio",
		"TASKER_TELEMETRY_TRACE_SAMPLE_RATIO=most":  "TASKER_TELEMETRY_TRACE_SAMPLE_RATIO",
		"TASKER_ORCHESTRATOR_POLL_INTERVAL=soon":    "TASKER_ORCHESTRATOR_POLL_INTERVAL",
		"TASKER_DATABASE_MAX_CONNS=many":            "TASKER_DATABASE_MAX_CONNS",
		"TASKER_ORCHESTRATOR_VISIBILITY_TIMEOUT=0s": "orchestrator.visibility_timeout",
		"TASKER_RETENTION_TASKS_AFTER=10m":          "retention.tasks_after",
		"TASKER_RETENTION_HISTORY_AFTER=-1h":        "retention.history_after",
		"TASKER_RETENTION_INTERVAL=0s":              "retention.interval",
		"TASKER_RETENTION_BATCH_SIZE=0":             "retention.batch_size",
		"TASKER_SERVER_LISTEN=8080":                 "server.listen",
		"TASKER_SERVER_LISTEN=localhost":            "server.listen",
		"TASKER_SERVER_LISTEN=:99999":               "server.listen: port",
		"TASKER_SERVER_LISTEN=:http":                "server.listen: port",
		"TASKER_DATABASE_CONNECT_WAIT=-1s":          "database.connect_wait",
		"TASKER_ORCHESTRATOR_REAP_GRACE=0s":         "orchestrator.reap_grace",
	}
	for kv, want := range cases {
		_, err := config.Load("", []string{"DATABASE_URL=postgres://a@h/db", kv})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming %s", kv, err, want)
		}
	}
	if _, err := config.Load("", nil); err == nil || !strings.Contains(err.Error(), "database.url") {
		t.Errorf("missing URL: %v", err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[server]\nlisten_addr = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(bad, []string{"DATABASE_URL=postgres://a@h/db"}); err == nil || !strings.Contains(err.Error(), "server.listen_addr") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestMaskedHidesSecrets(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Database.URL = "postgres://user:hunter2@db:5432/tasker"
	cfg.Auth.Keys = []config.APIKey{{Name: "ci", Key: "0123456789abcdef-secret", Permissions: []string{"read"}}}
	out, err := cfg.Masked().TOML()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2", "0123456789abcdef-secret"} {
		if strings.Contains(out, secret) {
			t.Errorf("masked config still contains %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "user") || !strings.Contains(out, `name = "ci"`) {
		t.Errorf("masked config lost non-secret fields:\n%s", out)
	}
}

// TestLoadReportsFileAndEnvironmentErrors: a broken file does not hide a
// bad variable, and every bad variable is named.
func TestLoadReportsFileAndEnvironmentErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := []string{"DATABASE_URL=postgres://a@h/db", "TASKER_ORCHESTRATOR_BATCH_SIZE=abc", "TASKER_SERVER_READ_TIMEOUT=soon"}
	for name, body := range map[string]string{
		"syntax":  "[database\nurl = 1\n",
		"unknown": "[database]\nmax_conn = 5\n",
		"type":    "[database]\nmax_conns = \"many\"\n",
	} {
		path := filepath.Join(dir, name+".toml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := config.Load(path, env)
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		for _, want := range []string{path, "TASKER_ORCHESTRATOR_BATCH_SIZE", "TASKER_SERVER_READ_TIMEOUT"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error does not name %s:\n%v", name, want, err)
			}
		}
		if config.OnlyURLMissing(err) {
			t.Errorf("%s: a broken file counts as only a missing URL", name)
		}
	}
}

// TestOnlyURLMissing: a configuration without database.url is otherwise
// checked in full; only the missing URL alone is tolerable.
func TestOnlyURLMissing(t *testing.T) {
	t.Parallel()
	_, err := config.Load("", nil)
	if !config.OnlyURLMissing(err) {
		t.Errorf("no URL, nothing else wrong: %v", err)
	}
	_, err = config.Load("", []string{"TASKER_DATABASE_MAX_CONNS=1"})
	if err == nil || config.OnlyURLMissing(err) || !strings.Contains(err.Error(), "database.max_conns") {
		t.Errorf("no URL and max_conns = 1: %v", err)
	}
	_, err = config.Load("", []string{"TASKER_ORCHESTRATOR_BATCH_SIZE=abc"})
	if err == nil || config.OnlyURLMissing(err) {
		t.Errorf("no URL and a bad variable: %v", err)
	}
}

func TestMaskURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://bob:s3cret@h/db":                         "postgres://bob:xxxxx@h/db",
		"postgres://bob:s3cret@h/db?password=qsecret":        "postgres://bob:xxxxx@h/db?password=xxxxx",
		"postgres://bob@h/db?sslmode=disable&password=q&x=1": "postgres://bob@h/db?sslmode=disable&password=xxxxx&x=1",
		"postgres://bob@h/db?PassWord=q":                     "postgres://bob@h/db?PassWord=xxxxx",
		"postgres://bob@h/db":                                "postgres://bob@h/db",
		"host=h user=bob password=s3cret dbname=db":          "host=h user=bob password=xxxxx dbname=db",
		"host=h password = 'a b\\' c' dbname=db":             "host=h password = xxxxx dbname=db",
		"postgres://bob:%zz@h/db":                            "postgres://bob:xxxxx@h/db",
	} {
		got := config.MaskURL(in)
		if got != want {
			t.Errorf("MaskURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMapUsesTheTOMLKeys: JSON output names keys as the file does.
func TestMapUsesTheTOMLKeys(t *testing.T) {
	t.Parallel()
	m, err := config.Default().Map()
	if err != nil {
		t.Fatal(err)
	}
	db, _ := m["database"].(map[string]any)
	if db == nil || db["max_conns"] == nil || db["statement_timeout"] != "30s" {
		t.Errorf("database section: %#v", m["database"])
	}
	if _, ok := m["Database"]; ok {
		t.Error("Go field names in the map")
	}
}
