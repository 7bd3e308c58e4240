// Package config defines the orchestrator's configuration: structs with
// documented defaults, loading from a TOML file, overrides from TASKER_…
// environment variables (and DATABASE_URL), and validation that names the bad
// key. Only this package and cmd/ read the environment.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Duration is a time.Duration written as "30s", "250ms" in TOML and env.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText formats the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Defaults (exported so tests and docs can refer to them).
const (
	DefaultListen            = "127.0.0.1:8080"
	DefaultMaxConns          = 20
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultMaxBodyBytes      = 2 << 20
	DefaultBatchSize         = 50
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultPollInterval      = 1 * time.Second
	DefaultTimerInterval     = 1 * time.Second
	DefaultReapInterval      = 2 * time.Second
	DefaultReapGrace         = time.Minute
	DefaultMaxReadCount      = 10
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultTemplatesDir      = "config/templates"
	DefaultServiceName       = "tasker-orchestrator"
	DefaultLogLevel          = "info"
	DefaultLogFormat         = "json"
	DefaultStatementTimeout  = 30 * time.Second
	DefaultConnectWait       = time.Minute
	DefaultStaleTaskTimeout  = time.Hour
	DefaultStaleCheck        = 15 * time.Second
	DefaultArchiveRetention  = 7 * 24 * time.Hour
	DefaultRetentionInterval = 10 * time.Minute
	DefaultRetentionBatch    = 1000
	// MinRetention is the shortest non-zero retention: a cut-off must lie
	// well behind every transaction still running.
	MinRetention = time.Hour
)

// Config is the whole configuration.
type Config struct {
	Database     Database     `toml:"database"`
	Server       Server       `toml:"server"`
	Orchestrator Orchestrator `toml:"orchestrator"`
	Telemetry    Telemetry    `toml:"telemetry"`
	Log          Log          `toml:"log"`
	Auth         Auth         `toml:"auth"`
	Retention    Retention    `toml:"retention"`
}

// Database configures the connection pool and migrations.
type Database struct {
	// URL is the Postgres connection string (secret: its password is masked
	// when printed). Env: DATABASE_URL or TASKER_DATABASE_URL. Required.
	URL string `toml:"url" secret:"true"`
	// MaxConns is the pool size. Default 20.
	MaxConns int `toml:"max_conns"`
	// MigrateOnStart applies pending migrations when the daemon starts
	// (replicas starting together take turns on an advisory lock). Default true.
	MigrateOnStart bool `toml:"migrate_on_start"`
	// StatementTimeout bounds every statement on the daemon's connections.
	// Default 30s.
	StatementTimeout Duration `toml:"statement_timeout"`
	// ConnectWait is how long the daemon keeps trying to reach the database
	// when it starts (a database that starts at the same time, or is
	// restarting); a refused password or an unknown database fails at
	// once. 0 tries once. Default 60s.
	ConnectWait Duration `toml:"connect_wait"`
}

// Server configures the HTTP API.
type Server struct {
	// Listen is the address of the API, /metrics and health endpoints.
	// Default 127.0.0.1:8080 (use 0.0.0.0:8080 in a container).
	Listen string `toml:"listen"`
	// ReadTimeout and WriteTimeout bound each request. Defaults 10s, 30s.
	ReadTimeout  Duration `toml:"read_timeout"`
	WriteTimeout Duration `toml:"write_timeout"`
	// MaxBodyBytes caps request bodies. Default 2 MiB.
	MaxBodyBytes int64 `toml:"max_body_bytes"`
}

// Orchestrator tunes the orchestration loops.
type Orchestrator struct {
	// Enabled runs the orchestration loops in this process. Default true;
	// false makes an API-only replica.
	Enabled bool `toml:"enabled"`
	// BatchSize is how many queue messages one read takes. Default 50.
	BatchSize int `toml:"batch_size"`
	// ResultLoops is how many step-result loops may run side by side in
	// this process, each reading and processing its own batches (as
	// replicas do); the second and later join only while reads come back
	// full. Default 2.
	ResultLoops int `toml:"result_loops"`
	// VisibilityTimeout hides a message being processed. Default 30s.
	VisibilityTimeout Duration `toml:"visibility_timeout"`
	// PollInterval is the fallback poll when no notification arrives. Default 1s.
	PollInterval Duration `toml:"poll_interval"`
	// TimerInterval is how often due retries are looked for. Default 1s.
	TimerInterval Duration `toml:"timer_interval"`
	// ReapInterval is how often expired step leases are looked for. Default 2s.
	ReapInterval Duration `toml:"reap_interval"`
	// ReapGrace is how long expired leases are left alone after the
	// orchestrator could not reach the database, so that workers can renew
	// or submit after the outage. Default 1m.
	ReapGrace Duration `toml:"reap_grace"`
	// MaxReadCount is how often a command message may be read before it is
	// archived as poison. Default 10.
	MaxReadCount int `toml:"max_read_count"`
	// StaleTaskTimeout is how long a task may make no progress (no
	// transition, no step change, no heartbeat) before it is moved to error
	// with a DLQ entry, unless its template sets stale_after_seconds.
	// Default 1h.
	StaleTaskTimeout Duration `toml:"stale_task_timeout"`
	// StaleCheckInterval is how often stale tasks are looked for. Default 15s.
	StaleCheckInterval Duration `toml:"stale_check_interval"`
	// TemplatesDir holds the task templates registered at start; a
	// relative path is relative to the daemon's working directory. Default
	// config/templates; empty registers none.
	TemplatesDir string `toml:"templates_dir"`
	// ShutdownTimeout bounds the graceful shutdown: in-flight HTTP
	// requests get up to half of it, the orchestration loops the rest (at
	// least the other half), the telemetry flush and the pool close a
	// tenth more each. A step that does not finish in time makes the
	// shutdown incomplete: logged at ERROR, and serve exits 1. Default 30s.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
}

// Telemetry configures traces and metrics.
type Telemetry struct {
	// ServiceName is the OpenTelemetry service.name. Default tasker-orchestrator.
	ServiceName string `toml:"service_name"`
	// TracingEnabled exports traces by OTLP. Default false (then tracing
	// costs nothing). OTEL_EXPORTER_OTLP_* variables are honoured.
	TracingEnabled bool `toml:"tracing_enabled"`
	// OTLPEndpoint overrides OTEL_EXPORTER_OTLP_ENDPOINT, e.g.
	// "localhost:4317" (grpc) or "http://localhost:4318" (http).
	OTLPEndpoint string `toml:"otlp_endpoint"`
	// OTLPProtocol is "grpc" or "http/protobuf". Default grpc.
	OTLPProtocol string `toml:"otlp_protocol"`
	// OTLPEncoder is the span exporter: "tasker" (default) encodes OTLP
	// itself, at about a fifth of the CPU of the OpenTelemetry SDK's
	// exporters (docs/performance.md), each span as it ends without the
	// SDK's span objects (otlpwire.Tracer), and sends the same requests;
	// "sdk" uses the SDK's spans and exporters. The SDK's exporters are
	// used anyway when OTEL_EXPORTER_OTLP_*CERTIFICATE or *CLIENT_KEY is
	// set, and its spans when OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT is.
	OTLPEncoder string `toml:"otlp_encoder"`
	// TraceSampleRatio is the share of tasks whose traces are recorded, from
	// 0 to 1, decided once per task when it is accepted (by its trace id)
	// and carried in its traceparent, so that a task's trace is kept or
	// dropped whole, by the orchestrator and by the workers. Default 1.
	// OTEL_TRACES_SAMPLER, when set, takes precedence. Metrics count every
	// task either way.
	TraceSampleRatio float64 `toml:"trace_sample_ratio"`
	// MetricsEnabled serves /metrics. Default true.
	MetricsEnabled bool `toml:"metrics_enabled"`
}

// Retention bounds the database's growth: the orchestrator deletes, in
// batches, what is older than these (migration 00024; "orchestrator prune"
// runs the same sweep by hand). 0 keeps that kind of row forever; anything
// else must be at least 1h.
type Retention struct {
	// ArchiveAfter: messages archived in the engine's queues (poison
	// messages, domain events their consumers archived) are deleted after
	// this long. Default 168h (7 days).
	ArchiveAfter Duration `toml:"archive_after"`
	// HistoryAfter: for tasks finished this long ago, every transition but
	// the last of the task and of each step is deleted; the task, its steps
	// and their results stay. Default 0 (keep).
	HistoryAfter Duration `toml:"history_after"`
	// TasksAfter: tasks finished this long ago are deleted with their
	// steps, transitions and DLQ entries, except tasks with an open DLQ
	// entry (pending or investigating). A duplicate of a deleted task's
	// request creates a new task. Default 0 (keep).
	TasksAfter Duration `toml:"tasks_after"`
	// Interval is how often the sweep runs. Default 10m.
	Interval Duration `toml:"interval"`
	// BatchSize is how many tasks (or archived messages per queue) one
	// transaction deletes. Default 1000.
	BatchSize int `toml:"batch_size"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `toml:"level"`
	// Format is json or text. Default json.
	Format string `toml:"format"`
}

// Auth configures API authentication.
type Auth struct {
	// Enabled requires a credential on /v1. Default false (local use).
	Enabled bool `toml:"enabled"`
	// PublicHealth leaves /healthz and /readyz open when auth is on. Default true.
	PublicHealth bool `toml:"public_health"`
	// PublicMetrics leaves /metrics open when auth is on. Default true.
	PublicMetrics bool `toml:"public_metrics"`
	// Keys are the accepted credentials, sent as "X-API-Key: <key>" or
	// "Authorization: Bearer <key>".
	Keys []APIKey `toml:"keys"`
}

// APIKey is one credential and what it may do.
type APIKey struct {
	// Name identifies the key in logs (never the key itself).
	Name string `toml:"name"`
	// Key is the secret.
	Key string `toml:"key" secret:"true"`
	// Permissions: any of read, write, admin (admin implies write, write
	// implies read).
	Permissions []string `toml:"permissions"`
}

// Default returns the configuration with every default applied.
func Default() Config {
	return Config{
		Database: Database{MaxConns: DefaultMaxConns, MigrateOnStart: true,
			StatementTimeout: Duration{DefaultStatementTimeout}, ConnectWait: Duration{DefaultConnectWait}},
		Server: Server{Listen: DefaultListen, ReadTimeout: Duration{DefaultReadTimeout},
			WriteTimeout: Duration{DefaultWriteTimeout}, MaxBodyBytes: DefaultMaxBodyBytes},
		Orchestrator: Orchestrator{Enabled: true, BatchSize: DefaultBatchSize, ResultLoops: 2,
			VisibilityTimeout: Duration{DefaultVisibilityTimeout}, PollInterval: Duration{DefaultPollInterval},
			TimerInterval: Duration{DefaultTimerInterval}, ReapInterval: Duration{DefaultReapInterval},
			ReapGrace: Duration{DefaultReapGrace}, MaxReadCount: DefaultMaxReadCount, TemplatesDir: DefaultTemplatesDir,
			StaleTaskTimeout: Duration{DefaultStaleTaskTimeout}, StaleCheckInterval: Duration{DefaultStaleCheck},
			ShutdownTimeout: Duration{DefaultShutdownTimeout}},
		Telemetry: Telemetry{ServiceName: DefaultServiceName, OTLPProtocol: "grpc", OTLPEncoder: "tasker", TraceSampleRatio: 1, MetricsEnabled: true},
		Log:       Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Auth:      Auth{PublicHealth: true, PublicMetrics: true},
		Retention: Retention{ArchiveAfter: Duration{DefaultArchiveRetention},
			Interval: Duration{DefaultRetentionInterval}, BatchSize: DefaultRetentionBatch},
	}
}

// Load reads the defaults, then the TOML file at path (if path is not
// empty), then the environment, and validates the result. The error reports
// every problem found: a file that does not parse (or has an unknown key)
// together with every bad environment variable; otherwise every invalid key
// (a *ValidationError).
func Load(path string, environ []string) (Config, error) {
	cfg := Default()
	var fileErr error
	if path != "" {
		md, err := toml.DecodeFile(path, &cfg)
		if err != nil {
			fileErr = fmt.Errorf("config file %s: %w", path, err)
		} else if undec := md.Undecoded(); len(undec) > 0 {
			keys := make([]string, len(undec))
			for i, k := range undec {
				keys[i] = fmt.Sprintf("%q", k.String())
			}
			fileErr = fmt.Errorf("config file %s: unknown key %s", path, strings.Join(keys, ", "))
		}
	}
	envErr := applyEnv(&cfg, environ)
	if fileErr != nil || envErr != nil {
		// Validating what a broken file left half-decoded would report
		// noise; these are the errors to fix first.
		return cfg, errors.Join(fileErr, envErr)
	}
	return cfg, cfg.Validate()
}

// EnvName is the environment variable that overrides a key ("server.listen"
// -> TASKER_SERVER_LISTEN).
func EnvName(key string) string {
	return "TASKER_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// applyEnv overrides scalar keys from TASKER_<SECTION>_<KEY> variables, and
// the database URL from DATABASE_URL (TASKER_DATABASE_URL wins).
func applyEnv(cfg *Config, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	if v, ok := env["DATABASE_URL"]; ok && v != "" {
		cfg.Database.URL = v
	}
	var errs []error
	walk(reflect.ValueOf(cfg).Elem(), "", func(key string, f reflect.Value, _ reflect.StructField) {
		v, ok := env[EnvName(key)]
		if !ok {
			return
		}
		if e := setFromString(f, v); e != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", EnvName(key), key, e))
		}
	})
	return errors.Join(errs...)
}

// walk visits every scalar field with its dotted TOML key.
func walk(v reflect.Value, prefix string, fn func(key string, f reflect.Value, sf reflect.StructField)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		key := sf.Tag.Get("toml")
		if key == "" {
			continue
		}
		if prefix != "" {
			key = prefix + "." + key
		}
		f := v.Field(i)
		if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(Duration{}) {
			walk(f, key, fn)
			continue
		}
		fn(key, f, sf)
	}
}

func setFromString(f reflect.Value, s string) error {
	switch {
	case f.Type() == reflect.TypeOf(Duration{}):
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration (like 30s or 250ms): %q", s)
		}
		f.Set(reflect.ValueOf(Duration{d}))
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
		f.SetBool(b)
	case f.Kind() == reflect.Int, f.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		f.SetInt(n)
	case f.Kind() == reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("not a number: %q", s)
		}
		f.SetFloat(x)
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		parts := strings.Split(s, ",")
		f.Set(reflect.ValueOf(parts))
	default:
		return errors.New("cannot be set from the environment; use the config file")
	}
	return nil
}

// Problem is one invalid key.
type Problem struct {
	Key     string // dotted TOML key, e.g. "database.max_conns"
	Message string
}

// ValidationError lists every invalid key of a configuration.
type ValidationError struct{ Problems []Problem }

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Key + ": " + p.Message
	}
	return "invalid configuration:\n  " + strings.Join(lines, "\n  ")
}

// msgURLRequired is the problem of a configuration without database.url.
const msgURLRequired = "is required (or set DATABASE_URL)"

// OnlyURLMissing reports whether err (from Load or Validate) says nothing
// but that database.url is not set: the configuration is otherwise valid,
// which is enough to print it.
func OnlyURLMissing(err error) bool {
	var ve *ValidationError
	return errors.As(err, &ve) && len(ve.Problems) == 1 &&
		ve.Problems[0].Key == "database.url" && ve.Problems[0].Message == msgURLRequired
}

// CheckListen says what is wrong with a listen address (server.listen, or a
// flag that overrides it), or returns "".
func CheckListen(addr string) string {
	if addr == "" {
		return "is required"
	}
	if msg := checkListen(addr); msg != "" {
		return fmt.Sprintf("%s, got %q", msg, addr)
	}
	return ""
}

// Validate checks every key and names every bad one (a *ValidationError).
func (c Config) Validate() error {
	var problems []Problem
	bad := func(key, format string, args ...any) {
		problems = append(problems, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
	}
	if c.Database.URL == "" {
		bad("database.url", msgURLRequired)
	} else if u, err := url.Parse(c.Database.URL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		bad("database.url", "must be a postgres:// URL")
	}
	if c.Database.MaxConns < 2 || c.Database.MaxConns > 1000 {
		bad("database.max_conns", "must be between 2 and 1000, got %d", c.Database.MaxConns)
	}
	if c.Database.ConnectWait.Duration < 0 {
		bad("database.connect_wait", "must not be negative")
	}
	if c.Database.StatementTimeout.Duration < 0 {
		bad("database.statement_timeout", "must not be negative")
	}
	if msg := CheckListen(c.Server.Listen); msg != "" {
		bad("server.listen", "%s", msg)
	}
	if c.Server.ReadTimeout.Duration <= 0 {
		bad("server.read_timeout", "must be positive")
	}
	if c.Server.WriteTimeout.Duration <= 0 {
		bad("server.write_timeout", "must be positive")
	}
	if c.Server.MaxBodyBytes < 1024 {
		bad("server.max_body_bytes", "must be at least 1024")
	}
	o := c.Orchestrator
	if o.BatchSize < 1 || o.BatchSize > 1000 {
		bad("orchestrator.batch_size", "must be between 1 and 1000, got %d", o.BatchSize)
	}
	if o.ResultLoops < 1 || o.ResultLoops > 32 {
		bad("orchestrator.result_loops", "must be between 1 and 32, got %d", o.ResultLoops)
	}
	if o.VisibilityTimeout.Duration < time.Second {
		bad("orchestrator.visibility_timeout", "must be at least 1s")
	}
	for key, d := range map[string]Duration{"orchestrator.poll_interval": o.PollInterval,
		"orchestrator.timer_interval": o.TimerInterval, "orchestrator.reap_interval": o.ReapInterval,
		"orchestrator.reap_grace":       o.ReapGrace,
		"orchestrator.shutdown_timeout": o.ShutdownTimeout, "orchestrator.stale_task_timeout": o.StaleTaskTimeout,
		"orchestrator.stale_check_interval": o.StaleCheckInterval} {
		if d.Duration <= 0 {
			bad(key, "must be positive")
		}
	}
	if o.MaxReadCount < 1 {
		bad("orchestrator.max_read_count", "must be at least 1")
	}
	r := c.Retention
	for key, d := range map[string]Duration{"retention.archive_after": r.ArchiveAfter,
		"retention.history_after": r.HistoryAfter, "retention.tasks_after": r.TasksAfter} {
		if d.Duration < 0 || (d.Duration > 0 && d.Duration < MinRetention) {
			bad(key, "must be 0 (keep forever) or at least 1h, got %s", d.Duration)
		}
	}
	if r.Interval.Duration <= 0 {
		bad("retention.interval", "must be positive")
	}
	if r.BatchSize < 1 || r.BatchSize > 100000 {
		bad("retention.batch_size", "must be between 1 and 100000, got %d", r.BatchSize)
	}
	switch c.Telemetry.OTLPProtocol {
	case "grpc", "http/protobuf", "http":
	default:
		bad("telemetry.otlp_protocol", "must be grpc or http/protobuf, got %q", c.Telemetry.OTLPProtocol)
	}
	switch c.Telemetry.OTLPEncoder {
	case "tasker", "sdk":
	default:
		bad("telemetry.otlp_encoder", "must be tasker or sdk, got %q", c.Telemetry.OTLPEncoder)
	}
	if r := c.Telemetry.TraceSampleRatio; !(r >= 0 && r <= 1) {
		bad("telemetry.trace_sample_ratio", "must be between 0 and 1, got %v", r)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	if c.Auth.Enabled && len(c.Auth.Keys) == 0 {
		bad("auth.keys", "auth is enabled but no keys are configured")
	}
	seen := map[string]bool{}
	for i, k := range c.Auth.Keys {
		key := fmt.Sprintf("auth.keys[%d]", i)
		if k.Name == "" {
			bad(key+".name", "is required")
		}
		if len(k.Key) < 16 {
			bad(key+".key", "must be at least 16 characters")
		}
		if seen[k.Key] {
			bad(key+".key", "duplicates another key")
		}
		seen[k.Key] = true
		if len(k.Permissions) == 0 {
			bad(key+".permissions", "is empty; use read, write and/or admin")
		}
		for _, p := range k.Permissions {
			if p != "read" && p != "write" && p != "admin" {
				bad(key+".permissions", "unknown permission %q (read, write, admin)", p)
			}
		}
	}
	if len(problems) > 0 {
		// Map iteration above is unordered; the report is stable.
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Key < problems[j].Key })
		return &ValidationError{Problems: problems}
	}
	return nil
}

// Masked returns a copy with secrets replaced, for printing.
func (c Config) Masked() Config {
	out := c
	out.Database.URL = MaskURL(c.Database.URL)
	out.Auth.Keys = make([]APIKey, len(c.Auth.Keys))
	for i, k := range c.Auth.Keys {
		k.Key = masked
		out.Auth.Keys[i] = k
	}
	return out
}

const masked = "xxxxx"

var (
	// password=... in a key=value connection string; the value may be
	// quoted ('a b', with \' and \\ escapes).
	dsnPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
	// user:password@ in a URL that net/url does not parse.
	userinfoPassword = regexp.MustCompile(`(://[^/:@]*:)[^@/]*@`)
)

// MaskURL replaces every password in a Postgres connection string, URL or
// key=value form, with xxxxx: the one in the user info and a password
// parameter in the query string (libpq accepts both).
func MaskURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		// Not a URL net/url understands (a key=value DSN, or a URL
		// with characters it refuses): mask by pattern.
		return dsnPassword.ReplaceAllString(userinfoPassword.ReplaceAllString(s, "${1}"+masked+"@"), "${1}"+masked)
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), masked)
		}
	}
	if u.RawQuery != "" {
		// Rewritten in place, keeping the parameters' order.
		params := strings.Split(u.RawQuery, "&")
		for i, p := range params {
			k, _, _ := strings.Cut(p, "=")
			if name, err := url.QueryUnescape(k); err == nil && strings.EqualFold(name, "password") {
				params[i] = k + "=" + masked
			}
		}
		u.RawQuery = strings.Join(params, "&")
	}
	return u.String()
}

// TOML renders the configuration as TOML.
func (c Config) TOML() (string, error) {
	var b strings.Builder
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Map renders the configuration as nested maps keyed by the TOML keys (as
// the file and the TASKER_* variables name them), for JSON output.
func (c Config) Map() (map[string]any, error) {
	text, err := c.TOML()
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if _, err := toml.Decode(text, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Keys lists every scalar key with its environment variable, for docs and
// the config test.
func Keys() []string {
	var out []string
	c := Default()
	walk(reflect.ValueOf(&c).Elem(), "", func(key string, _ reflect.Value, _ reflect.StructField) {
		out = append(out, key)
	})
	return out
}

// Environ is os.Environ, named for the callers in cmd/.
func Environ() []string { return os.Environ() }

// checkListen says what is wrong with a listen address, or "".
func checkListen(addr string) string {
	const form = "must be host:port or :port (e.g. 127.0.0.1:8080, :8080, [::1]:8080)"
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return form
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "port must be a number from 0 to 65535"
	}
	return ""
}
