// sslclient makes HTTPS requests with OpenSSL's own API: SSL_write for the
// request, SSL_read in small pieces for the response. The e2e tests link it
// statically, so that the library sonde probes is the executable itself.
//
// usage: sslclient HOST PORT PATH COUNT
// Sends COUNT requests for PATH over one keep-alive connection and prints
// "ok N" once every response was read whole.
#define _GNU_SOURCE // strcasestr
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what)
{
	fprintf(stderr, "sslclient: %s\n", what);
	ERR_print_errors_fp(stderr);
	return 1;
}

// read_response reads one response with a Content-Length body, 64 bytes
// per SSL_read: most reads are served from OpenSSL's buffer.
static int read_response(SSL *ssl)
{
	char buf[65536];
	size_t have = 0;
	long want = -1;
	for (;;) {
		if (have + 64 > sizeof(buf))
			return -1;
		int n = SSL_read(ssl, buf + have, 64);
		if (n <= 0)
			return -1;
		have += n;
		buf[have] = 0;
		char *end = strstr(buf, "\r\n\r\n");
		if (!end)
			continue;
		if (want < 0) {
			char *cl = strcasestr(buf, "content-length:");
			if (!cl)
				return -1;
			want = (end + 4 - buf) + atol(cl + 15);
		}
		if ((long)have >= want)
			return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
	}
}

int main(int argc, char **argv)
{
	if (argc != 5)
		return fail("usage: sslclient HOST PORT PATH COUNT");
	int count = atoi(argv[4]);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1)
		return fail("bad address");
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		return fail("connect");
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return fail("SSL_CTX_new");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1)
		return fail("SSL_connect");
	char req[512];
	int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: sslclient\r\n\r\n", argv[3], argv[1], argv[2]);
	for (int i = 0; i < count; i++) {
		if (SSL_write(ssl, req, len) != len)
			return fail("SSL_write");
		if (read_response(ssl) != 0)
			return fail("bad response");
	}
	printf("ok %d\n", count);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return 0;
}
