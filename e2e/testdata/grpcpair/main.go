// grpcpair is a grpc-go server and client for sonde's gRPC tests, without
// generated code: its service is declared by hand and its messages are
// raw bytes (a codec that passes them through), so that the four kinds of
// call can be made with nothing but grpc-go. It builds against every
// grpc-go release from v1.56 (the e2e tests and the offsets generator
// build it at several), so it uses only API that v1.56 has.
//
//	grpcpair server [URL]      serve on a free port; prints "listening ADDR".
//	                           With URL, Unary GETs it before it answers.
//	grpcpair front ADDR        an HTTP server on a free port whose every
//	                           request makes one Unary call to ADDR
//	grpcpair client ADDR N     make N rounds of the four calls, then one
//	                           failing call; prints "ok N"
//	grpcpair hold ADDR N       one Unary call, then "ready"; on SIGUSR1, N
//	                           more on the same connection; "ok N"
//	grpcpair load ADDR C D     C goroutines make Unary calls on one
//	                           connection for duration D, as fast as they
//	                           can; "ok CALLS seconds S"
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// raw passes []byte messages through.
type raw struct{}

func (raw) Marshal(v any) ([]byte, error)   { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(b []byte, v any) error { *(v.(*[]byte)) = append([]byte(nil), b...); return nil }
func (raw) Name() string                    { return "proto" }
func (raw) String() string                  { return "raw" }

var _ encoding.Codec = raw{}

const service = "sonde.test.Echo"

var desc = grpc.ServiceDesc{
	ServiceName: service,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Unary", Handler: unary},
		{MethodName: "Fail", Handler: fail},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "ServerStream", Handler: serverStream, ServerStreams: true},
		{StreamName: "ClientStream", Handler: clientStream, ClientStreams: true},
		{StreamName: "Bidi", Handler: bidi, ServerStreams: true, ClientStreams: true},
	},
}

// backend, when set, is what Unary GETs before it answers.
var backend string

func unary(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	if backend != "" {
		req, err := http.NewRequestWithContext(ctx, "GET", backend, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return &in, nil
}

func fail(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	return nil, status.Error(codes.NotFound, "no such echo")
}

func serverStream(_ any, s grpc.ServerStream) error {
	var in []byte
	if err := s.RecvMsg(&in); err != nil {
		return err
	}
	for range 3 {
		if err := s.SendMsg(&in); err != nil {
			return err
		}
	}
	return nil
}

func clientStream(_ any, s grpc.ServerStream) error {
	n := 0
	for {
		var in []byte
		if err := s.RecvMsg(&in); err == io.EOF {
			out := []byte(strconv.Itoa(n))
			return s.SendMsg(&out)
		} else if err != nil {
			return err
		}
		n++
	}
}

func bidi(_ any, s grpc.ServerStream) error {
	for {
		var in []byte
		if err := s.RecvMsg(&in); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := s.SendMsg(&in); err != nil {
			return err
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "server":
		if len(os.Args) == 3 {
			backend = os.Args[2]
		}
		ln := listen()
		srv := grpc.NewServer(grpc.ForceServerCodec(raw{}))
		srv.RegisterService(&desc, nil)
		fmt.Println("listening", ln.Addr())
		die(srv.Serve(ln))
	case "front":
		if len(os.Args) != 3 {
			usage()
		}
		conn := dial(os.Args[2])
		ln := listen()
		fmt.Println("listening", ln.Addr())
		die(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			msg, out := []byte("front"), []byte(nil)
			if err := conn.Invoke(r.Context(), "/"+service+"/Unary", &msg, &out); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			w.Write(out)
		})))
	case "client":
		if len(os.Args) != 4 {
			usage()
		}
		n, _ := strconv.Atoi(os.Args[3])
		client(dial(os.Args[2]), n)
	case "hold":
		if len(os.Args) != 4 {
			usage()
		}
		n, _ := strconv.Atoi(os.Args[3])
		conn := dial(os.Args[2])
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		msg := []byte("ping")
		var out []byte
		if err := conn.Invoke(ctx, "/"+service+"/Unary", &msg, &out); err != nil {
			die(err)
		}
		next := make(chan os.Signal, 1)
		signal.Notify(next, syscall.SIGUSR1)
		fmt.Println("ready")
		<-next
		for range n {
			if err := conn.Invoke(ctx, "/"+service+"/Unary", &msg, &out); err != nil {
				die(err)
			}
		}
		fmt.Println("ok", n)
	case "load":
		if len(os.Args) != 5 {
			usage()
		}
		conc, _ := strconv.Atoi(os.Args[3])
		d, err := time.ParseDuration(os.Args[4])
		if err != nil || conc < 1 {
			usage()
		}
		load(dial(os.Args[2]), conc, d)
	default:
		usage()
	}
}

func load(conn *grpc.ClientConn, conc int, d time.Duration) {
	var calls atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := []byte("ping")
			for time.Now().Before(deadline) {
				var out []byte
				if err := conn.Invoke(context.Background(), "/"+service+"/Unary", &msg, &out); err != nil {
					die(err)
				}
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("ok %d seconds %.3f\n", calls.Load(), time.Since(start).Seconds())
}

func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die(err)
	}
	return ln
}

// dial uses grpc.Dial, which every supported release has (NewClient came
// in v1.63).
func dial(addr string) *grpc.ClientConn {
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(raw{})))
	if err != nil {
		die(err)
	}
	return conn
}

func client(conn *grpc.ClientConn, n int) {
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg := []byte("ping")
	for range n {
		var out []byte
		if err := conn.Invoke(ctx, "/"+service+"/Unary", &msg, &out); err != nil {
			die(err)
		}
		for _, sd := range []grpc.StreamDesc{
			{StreamName: "ServerStream", ServerStreams: true},
			{StreamName: "ClientStream", ClientStreams: true},
			{StreamName: "Bidi", ServerStreams: true, ClientStreams: true},
		} {
			s, err := conn.NewStream(ctx, &sd, "/"+service+"/"+sd.StreamName)
			if err != nil {
				die(err)
			}
			sends := 1
			if sd.ClientStreams {
				sends = 3
			}
			for range sends {
				if err := s.SendMsg(&msg); err != nil {
					die(err)
				}
			}
			if err := s.CloseSend(); err != nil {
				die(err)
			}
			for {
				var out []byte
				if err := s.RecvMsg(&out); err == io.EOF {
					break
				} else if err != nil {
					die(err)
				}
			}
		}
	}
	var out []byte
	if err := conn.Invoke(ctx, "/"+service+"/Fail", &msg, &out); status.Code(err) != codes.NotFound {
		die(fmt.Errorf("Fail returned %v, want NotFound", err))
	}
	fmt.Println("ok", n)
}

func usage() {
	die(fmt.Errorf("usage: grpcpair server [URL] | front ADDR | client ADDR N | hold ADDR N | load ADDR C D"))
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "grpcpair:", err)
	os.Exit(1)
}
