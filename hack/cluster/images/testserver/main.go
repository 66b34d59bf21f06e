// Command testserver is the workload of the real-node smoke tests.
//
//	testserver write FILE TEXT      write TEXT to FILE (the init container fills an emptyDir)
//	testserver serve ADDR FILE      serve HTTP on ADDR: / answers with FILE's content, /healthz, /readyz
//	                                (ready once FILE exists), /whoami (uid, gid, whether / is writable),
//	                                /set?name=NAME&value=V sets a gauge that /metrics exports in the
//	                                Prometheus text format (the autoscaling tests drive metrics with it)
//	testserver get URL [CAFILE]     print the body of GET URL (exit 1 unless 200); CAFILE verifies HTTPS
//	testserver version              print the version
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const version = "slm-testserver 1"

var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// gauges are the values /set stores and /metrics exports (name -> value).
type gauges struct {
	sync.Mutex
	values map[string]float64
}

func (g *gauges) set(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	value, err := strconv.ParseFloat(r.URL.Query().Get("value"), 64)
	if !metricName.MatchString(name) || err != nil {
		http.Error(w, "usage: /set?name=METRIC_NAME&value=NUMBER", http.StatusBadRequest)
		return
	}
	g.Lock()
	g.values[name] = value
	g.Unlock()
	log.Printf("gauge %s = %g", name, value)
	fmt.Fprintf(w, "%s %g\n", name, value)
}

func (g *gauges) metrics(w http.ResponseWriter, r *http.Request) {
	g.Lock()
	defer g.Unlock()
	names := make([]string, 0, len(g.values))
	for name := range g.values {
		names = append(names, name)
	}
	sort.Strings(names)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	for _, name := range names {
		fmt.Fprintf(w, "# TYPE %s gauge\n%s %s\n", name, name, strconv.FormatFloat(g.values[name], 'g', -1, 64))
	}
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if len(os.Args) < 2 {
		fail("usage: testserver write FILE TEXT | serve ADDR FILE | get URL [CAFILE] | version")
	}
	switch args := os.Args[2:]; os.Args[1] {
	case "version":
		fmt.Println(version)
	case "write":
		need(args, 2)
		if err := os.WriteFile(args[0], []byte(args[1]), 0o644); err != nil {
			fail(err.Error())
		}
		fmt.Printf("wrote %d bytes to %s\n", len(args[1]), args[0])
	case "get":
		if len(args) == 2 {
			get(args[0], args[1])
		} else {
			need(args, 1)
			get(args[0], "")
		}
	case "serve":
		need(args, 2)
		serve(args[0], args[1])
	default:
		fail("unknown command " + os.Args[1])
	}
}

func need(args []string, n int) {
	if len(args) != n {
		fail(fmt.Sprintf("%s needs %d arguments", os.Args[1], n))
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, message)
	os.Exit(1)
}

func get(url, caFile string) {
	client := http.Client{Timeout: 10 * time.Second}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			fail(err.Error())
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail("no certificates in " + caFile)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	response, err := client.Get(url)
	if err != nil {
		fail(err.Error())
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(response.Body)
	fmt.Print(string(body))
	if response.StatusCode != http.StatusOK {
		fail(response.Status)
	}
}

func serve(addr, file string) {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		content, err := os.ReadFile(file)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		log.Printf("%s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "%s from %s\n", content, host)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(file); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		writable := "writable"
		if err := os.WriteFile("/.probe", nil, 0o644); err != nil {
			writable = "read-only: " + err.Error()
		} else {
			os.Remove("/.probe")
		}
		fmt.Fprintf(w, "uid=%d gid=%d root=%s\n", os.Getuid(), os.Getgid(), writable)
	})
	values := &gauges{values: map[string]float64{}}
	mux.HandleFunc("/set", values.set)
	mux.HandleFunc("/metrics", values.metrics)
	server := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		sig := <-stop
		log.Printf("got %s, shutting down", sig)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
	}()
	log.Printf("%s serving %s on %s", version, file, addr)
	if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	log.Print("stopped")
}
