package otlpwire

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Protocols.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// DefaultTimeout bounds one export attempt (OTEL_EXPORTER_OTLP_TIMEOUT's
// default).
const DefaultTimeout = 10 * time.Second

// Config says where and how spans are sent.
type Config struct {
	// Protocol is ProtocolGRPC or ProtocolHTTP.
	Protocol string
	// Endpoint is host:port for gRPC and the full URL of the traces path
	// (…/v1/traces) for HTTP.
	Endpoint string
	// Insecure: gRPC without TLS.
	Insecure bool
	// Headers go with every export (gRPC metadata or HTTP headers).
	Headers map[string]string
	// Gzip compresses requests.
	Gzip bool
	// Timeout bounds one attempt; default DefaultTimeout.
	Timeout time.Duration
}

// Resolve works out the Config for protocol ("" is gRPC) from an explicit
// endpoint (the daemon's telemetry.otlp_endpoint: host:port or a URL for
// gRPC, the base URL for HTTP, "" for none) and the standard
// OTEL_EXPORTER_OTLP_* variables read through getenv, the way the SDK's
// exporters read them: the TRACES_ variant before the general one, the
// general endpoint with /v1/traces appended for HTTP.
//
// unsupported is non-empty when the environment asks for what this
// exporter does not do (TLS certificate files): the caller should then use
// the SDK's exporter, which does.
func Resolve(protocol, endpoint string, getenv func(string) string) (cfg Config, unsupported string, err error) {
	env := func(name string) (string, string) {
		if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_" + name)); v != "" {
			return v, "OTEL_EXPORTER_OTLP_TRACES_" + name
		}
		return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_" + name)), "OTEL_EXPORTER_OTLP_" + name
	}
	for _, name := range []string{"CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"} {
		if v, key := env(name); v != "" {
			return Config{}, key + " is set", nil
		}
	}
	if protocol == "" {
		protocol = ProtocolGRPC
	}
	if protocol == "http" {
		protocol = ProtocolHTTP
	}
	cfg.Protocol = protocol

	if v, key := env("INSECURE"); v != "" {
		b, perr := strconv.ParseBool(v)
		if perr != nil {
			return Config{}, "", fmt.Errorf("%s: want true or false, got %q", key, v)
		}
		cfg.Insecure = b
	}
	if v, key := env("HEADERS"); v != "" {
		if cfg.Headers, err = parseHeaders(v); err != nil {
			return Config{}, "", fmt.Errorf("%s: %w", key, err)
		}
	}
	switch v, key := env("COMPRESSION"); v {
	case "", "none":
	case "gzip":
		cfg.Gzip = true
	default:
		return Config{}, "", fmt.Errorf("%s: want gzip or none, got %q", key, v)
	}
	if v, key := env("TIMEOUT"); v != "" {
		ms, perr := strconv.Atoi(v)
		if perr != nil || ms <= 0 {
			return Config{}, "", fmt.Errorf("%s: want a positive number of milliseconds, got %q", key, v)
		}
		cfg.Timeout = time.Duration(ms) * time.Millisecond
	}

	switch protocol {
	case ProtocolHTTP:
		switch {
		case endpoint != "":
			cfg.Endpoint = strings.TrimSuffix(endpoint, "/") + "/v1/traces"
		case getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
			cfg.Endpoint = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
		case getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "":
			cfg.Endpoint = strings.TrimSuffix(strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")), "/") + "/v1/traces"
		default:
			cfg.Endpoint = "http://localhost:4318/v1/traces"
		}
		u, perr := url.Parse(cfg.Endpoint)
		if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Config{}, "", fmt.Errorf("OTLP HTTP endpoint %q: want an http:// or https:// URL", cfg.Endpoint)
		}
	case ProtocolGRPC:
		ep := endpoint
		if ep == "" {
			ep, _ = env("ENDPOINT")
		}
		if ep == "" {
			ep = "localhost:4317"
		}
		switch {
		case strings.HasPrefix(ep, "http://"), strings.HasPrefix(ep, "https://"):
			u, perr := url.Parse(ep)
			if perr != nil || u.Host == "" {
				return Config{}, "", fmt.Errorf("OTLP gRPC endpoint %q: want host:port or a URL", ep)
			}
			cfg.Endpoint, cfg.Insecure = u.Host, u.Scheme == "http"
		case endpoint != "" && (strings.HasPrefix(ep, "localhost") || strings.HasPrefix(ep, "127.")):
			// telemetry.otlp_endpoint on this machine: a local collector
			// without TLS (as before this exporter).
			cfg.Endpoint, cfg.Insecure = ep, true
		default:
			cfg.Endpoint = ep
		}
	default:
		return Config{}, "", fmt.Errorf("unknown OTLP protocol %q (want %s or %s)", protocol, ProtocolGRPC, ProtocolHTTP)
	}
	return cfg, "", nil
}

// parseHeaders reads the W3C-baggage-like list "k1=v1,k2=v2" with
// URL-encoded values.
func parseHeaders(s string) (map[string]string, error) {
	h := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("want key=value pairs separated by commas, got %q", part)
		}
		uv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", k, err)
		}
		h[k] = uv
	}
	return h, nil
}
