// grpcpair is a grpc-go server and client for sonde's gRPC tests, without
// generated code: its service is declared by hand and its messages are
// raw bytes (a codec that passes them through), so that the four kinds of
// call can be made with nothing but grpc-go.
//
//	grpcpair server            serve on a free port; prints "listening ADDR"
//	grpcpair client ADDR N     make N rounds of the four calls, then one
//	                           failing call; prints "ok N"
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
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

func unary(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
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
	if len(os.Args) >= 2 && os.Args[1] == "server" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			die(err)
		}
		srv := grpc.NewServer(grpc.ForceServerCodec(raw{}))
		srv.RegisterService(&desc, nil)
		fmt.Println("listening", ln.Addr())
		die(srv.Serve(ln))
	}
	if len(os.Args) != 4 || os.Args[1] != "client" {
		die(fmt.Errorf("usage: grpcpair server | grpcpair client ADDR N"))
	}
	n, _ := strconv.Atoi(os.Args[3])
	conn, err := grpc.NewClient(os.Args[2], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(raw{})))
	if err != nil {
		die(err)
	}
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

func die(err error) {
	fmt.Fprintln(os.Stderr, "grpcpair:", err)
	os.Exit(1)
}
