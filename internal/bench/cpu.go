package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/cputime"
)

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat. Linux
// exports it as 100 to user space whatever the kernel's internal tick rate.
const clockTicks = 100

// procStat is the part of /proc/<pid>/stat the benchmark uses.
type procStat struct {
	comm                         string
	ppid                         int
	utime, stime, cutime, cstime int64 // clock ticks
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	// "pid (comm) state ppid ...": comm may contain spaces and parentheses,
	// so split at the last ')'.
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[closing+1:])
	// f[0] is field 3 (state); utime..cstime are fields 14..17.
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	var ps procStat
	ps.comm = s[open+1 : closing]
	ps.ppid, _ = strconv.Atoi(f[1])
	ps.utime, _ = strconv.ParseInt(f[11], 10, 64)
	ps.stime, _ = strconv.ParseInt(f[12], 10, 64)
	ps.cutime, _ = strconv.ParseInt(f[13], 10, 64)
	ps.cstime, _ = strconv.ParseInt(f[14], 10, 64)
	return ps, nil
}

func ticksToSeconds(t int64) float64 { return float64(t) / clockTicks }

// pgCPU reads the CPU time of a local Postgres server: the postmaster's own
// time, the time of its children that have exited (cutime+cstime: the
// postmaster reaps every backend and auxiliary process), and the time of its
// live children. The difference of two readings is the server's CPU time in
// between, including backends that came and went.
type pgCPU struct {
	postmaster int
}

// findPostgres locates the postmaster of the server conn is connected to,
// as the parent of conn's backend. It fails when the server is not on this
// machine or its processes cannot be read.
func findPostgres(ctx context.Context, conn *pgx.Conn, dbURL string) (*pgCPU, error) {
	if !isLocalServer(dbURL) {
		return nil, fmt.Errorf("the server is not on this machine")
	}
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return nil, err
	}
	bs, err := readProcStat(backend)
	if err != nil {
		return nil, fmt.Errorf("cannot read the backend's process (a server in a container or another PID namespace?): %w", err)
	}
	if !strings.HasPrefix(bs.comm, "postgres") {
		return nil, fmt.Errorf("process %d is %q, not a postgres backend (another PID namespace?)", backend, bs.comm)
	}
	pm, err := readProcStat(bs.ppid)
	if err != nil || !strings.HasPrefix(pm.comm, "postgres") {
		return nil, fmt.Errorf("cannot read the postmaster (process %d)", bs.ppid)
	}
	return &pgCPU{postmaster: bs.ppid}, nil
}

// seconds returns the server's cumulative CPU time. A child reaped while
// the children are scanned would be counted twice or not at all, so the scan
// is repeated until the postmaster's reaped-children time is the same
// before and after it.
func (p *pgCPU) seconds() (float64, error) {
	for attempt := 0; ; attempt++ {
		before, err := readProcStat(p.postmaster)
		if err != nil {
			return 0, fmt.Errorf("postmaster %d: %w", p.postmaster, err)
		}
		children, err := p.children()
		if err != nil {
			return 0, err
		}
		after, err := readProcStat(p.postmaster)
		if err != nil {
			return 0, fmt.Errorf("postmaster %d: %w", p.postmaster, err)
		}
		if before.cutime == after.cutime && before.cstime == after.cstime || attempt == 20 {
			return ticksToSeconds(children + after.utime + after.stime + after.cutime + after.cstime), nil
		}
	}
}

// children sums the CPU time of the postmaster's children (live or exited
// but not yet reaped).
func (p *pgCPU) children() (int64, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == p.postmaster {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.ppid != p.postmaster {
			continue
		}
		sum += st.utime + st.stime
	}
	return sum, nil
}

// selfCPU is this process's user+system time, in seconds.
func selfCPU() float64 {
	return cputime.Self().Seconds()
}

// processCPU is a child process's user+system time so far.
func processCPU(pid int) (float64, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return 0, err
	}
	return ticksToSeconds(st.utime + st.stime), nil
}

// CPU is the CPU time spent during the measured window, in seconds. A nil
// field was not measurable.
type CPU struct {
	// Postgres is the whole server's CPU time (every database: on a shared
	// server, other work counts too).
	Postgres *float64 `json:"postgres_s,omitempty"`
	// InProcess is this process: orchestrator, workers and the benchmark
	// driver together (in-process mode).
	InProcess *float64 `json:"in_process_s,omitempty"`
	// Orchestrator, Workers and Driver are separate processes (--processes).
	Orchestrator *float64 `json:"orchestrator_s,omitempty"`
	Workers      *float64 `json:"workers_s,omitempty"`
	Driver       *float64 `json:"driver_s,omitempty"`
	// Wall is the window's length; CPU seconds over Wall is cores used.
	Wall float64 `json:"wall_s"`
	// Note says why something is missing.
	Note string `json:"note,omitempty"`
}

// total is the CPU time of Postgres and of everything on the application's
// side (this process, or the orchestrator, workers and driver processes),
// and whether both sides were measured. Unlike the reports' "app µs/step"
// (appCPU), it counts a separate driver: in-process, the submitters are in
// this process's time too, and the design model's creator is in its own.
func (c CPU) total() (float64, bool) {
	if c.Postgres == nil {
		return 0, false
	}
	sum, app := *c.Postgres, false
	for _, v := range []*float64{c.InProcess, c.Orchestrator, c.Workers, c.Driver} {
		if v != nil {
			sum, app = sum+*v, true
		}
	}
	return sum, app
}

// cpuProbe takes CPU readings of everything the run involves.
type cpuProbe struct {
	pg       *pgCPU
	pgErr    error
	children map[string][]int // role -> pids (--processes)
}

type cpuReading struct {
	at       time.Time
	pg       float64
	pgOK     bool
	self     float64
	children map[string]float64
}

func (p *cpuProbe) read() cpuReading {
	r := cpuReading{at: time.Now(), self: selfCPU(), children: map[string]float64{}}
	if p.pg != nil {
		if s, err := p.pg.seconds(); err == nil {
			r.pg, r.pgOK = s, true
		}
	}
	for role, pids := range p.children {
		for _, pid := range pids {
			if s, err := processCPU(pid); err == nil {
				r.children[role] += s
			}
		}
	}
	return r
}

func ptr(f float64) *float64 { return &f }

// cpuBetween is the CPU spent between two readings.
func (p *cpuProbe) between(a, b cpuReading) CPU {
	c := CPU{Wall: b.at.Sub(a.at).Seconds()}
	if a.pgOK && b.pgOK {
		c.Postgres = ptr(b.pg - a.pg)
	} else if p.pgErr != nil {
		c.Note = "postgres CPU not measurable: " + p.pgErr.Error()
	}
	self := b.self - a.self
	if len(p.children) == 0 {
		c.InProcess = ptr(self)
		return c
	}
	c.Driver = ptr(self)
	if _, ok := p.children["orchestrator"]; ok {
		c.Orchestrator = ptr(b.children["orchestrator"] - a.children["orchestrator"])
	}
	if _, ok := p.children["workers"]; ok {
		c.Workers = ptr(b.children["workers"] - a.children["workers"])
	}
	return c
}
