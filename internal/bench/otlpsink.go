package bench

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// otlpSink is an OTLP/HTTP trace receiver that discards what it receives,
// so that --tracing measures the cost of producing and exporting spans (the
// batch processor, protobuf encoding, HTTP) without a collector.
type otlpSink struct {
	srv      *http.Server
	ln       net.Listener
	requests atomic.Int64
	bytes    atomic.Int64
}

func startOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.requests.Add(1)
		s.bytes.Add(n)
		// An empty body is a valid, fully successful ExportTraceServiceResponse.
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Ends when stop closes the server. A failure to serve shows up as
	// export errors in the exporters' logs.
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// endpoint is the base URL to give as the OTLP endpoint (protocol http/protobuf).
func (s *otlpSink) endpoint() string { return "http://" + s.ln.Addr().String() }

func (s *otlpSink) stop() { _ = s.srv.Close() }
