// sslloop calls SSL_do_handshake COUNT times on an SSL object that has no
// transport, so each call returns at once: what it measures is the cost of
// the call itself, and with sonde attached, of the probes on it (an entry
// probe and a return probe, as on SSL_read and SSL_write).
//
// usage: sslloop COUNT
// prints "NS ns/call".
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	long n = atol(argv[1]);
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	if (!ssl)
		return 1;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		SSL_do_handshake(ssl);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f ns/call\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
