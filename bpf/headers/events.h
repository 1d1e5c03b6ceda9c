// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Event layout shared by every sonde BPF program and read in place by
// tracer/events.go. Fields are ordered by size so that the struct has no
// implicit padding: userspace casts the ring-buffer record to this layout
// without copying, and a hole would make the two sides disagree silently.
#pragma once

// Upper bound of bytes captured per syscall. The runtime limit
// (cfg_capture_bytes) is at most this. A power of two: the verifier is shown
// offsets masked with CAPTURE_MAX - 1.
#define CAPTURE_MAX 16384

// At most this many iovecs are read per readv/writev/sendmsg/recvmsg; the
// byte count stays exact, only capture stops early.
#define IOV_MAX_READ 12

// Bytes of an executed file's path reported with EVENT_EXEC, NUL included.
// A power of two: the argument bytes that follow the path are placed at an
// offset the verifier is shown masked with 2 * PATH_MAX_CAPTURE - 1.
#define PATH_MAX_CAPTURE 512

// Bytes of the new program's argv reported with EVENT_EXEC, after the path.
#define ARGS_MAX_CAPTURE 1024

// At most this many messages of one sendmmsg/recvmmsg are reported.
#define MMSG_MAX 4

enum event_kind {
	EVENT_DATA = 1,    // bytes moved on a TCP socket
	EVENT_ACCEPT = 2,  // a connection accepted: the process is the server
	EVENT_CONNECT = 3, // a connection initiated: the process is the client
	EVENT_CLOSE = 4,   // the process closed its fd of a TCP socket
	EVENT_EXEC = 5,    // a process called execve; payload: the executed path, NUL, argv (NUL-separated)
	EVENT_EXIT = 6,    // a selected process exited
	EVENT_FORK = 7,    // a selected process forked: tgid is the child's
};

// The socket lost at least one event (ring buffer full) before this one:
// userspace must not parse this event as the continuation of the last.
#define EVENT_F_AFTER_LOSS 1

enum direction {
	DIR_NONE = 0,
	DIR_EGRESS = 1,  // the process sent the bytes
	DIR_INGRESS = 2, // the process received the bytes
};

// The syscall that produced an event, for statistics and debugging.
enum syscall_id {
	SYS_READ = 1,
	SYS_WRITE,
	SYS_READV,
	SYS_WRITEV,
	SYS_SENDTO,
	SYS_RECVFROM,
	SYS_SENDMSG,
	SYS_RECVMSG,
	SYS_SENDMMSG,
	SYS_RECVMMSG,
	SYS_SENDFILE,
	SYS_ACCEPT,
	SYS_CONNECT,
	SYS_CLOSE,
};

struct event {
	__u64 ts;       // CLOCK_MONOTONIC ns when the syscall returned
	__u64 sock;     // kernel address of struct sock: the connection's identity while it lives
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__u32 size;     // bytes the syscall really moved (may exceed captured)
	__u32 captured; // bytes of payload that follow this header
	__u16 sport;    // local port, host order
	__u16 dport;    // remote port, host order
	__u8 saddr[16]; // local address; IPv4 as ::ffff:a.b.c.d
	__u8 daddr[16]; // remote address
	__u8 kind;      // enum event_kind
	__u8 dir;       // enum direction
	__u8 syscall;   // enum syscall_id
	__u8 family;    // AF_INET or AF_INET6 as seen on the socket
	char comm[16];
	__u8 flags;   // EVENT_F_*
	__u8 _pad[3]; // explicit: keeps sizeof a multiple of 8 with no hidden tail
};

// Counters in the per-CPU array "counters"; userspace sums the CPUs.
enum counter {
	COUNTER_EVENTS = 0,     // events written to the ring buffer
	COUNTER_LOST,           // events the ring buffer had no room for
	COUNTER_IOV_CAPPED,     // capture stopped at IOV_MAX_READ iovecs
	COUNTER_MMSG_CAPPED,    // more than MMSG_MAX messages in one call
	COUNTER_TARGETS_FULL,   // a process could not be selected: targets map full
	COUNTER_MAX,
};
